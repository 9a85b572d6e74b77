"""Pure. The two seams of the simulator: the protocol core a host runs, and the NAT box a host sits behind.

Both are structural (``typing.Protocol``): the overlay node satisfies :class:`DatagramCore` without
knowing the simulator exists, exactly as an aioquic ``QuicConnection`` satisfies its UDP driver, and the
``nat`` package's NAT models satisfy :class:`NatBox`. The simulator drives the very objects that the
real UDP driver drives; nothing in it is specific to the overlay.
"""

from __future__ import annotations

from typing import Protocol

from ..events import Endpoint, Transmit


class DatagramCore(Protocol):
    """A sans-IO protocol endpoint bound to one UDP socket.

    The driver (the simulator or the real UDP driver) calls ``receive_datagram`` for each datagram and
    ``handle_timer`` when the deadline returned by ``get_timer`` arrives; after every such call it takes
    ``datagrams_to_send`` and asks ``get_timer`` again. After ``handle_timer(now)`` the timer must be
    None or later than ``now``, otherwise the core would be woken at the same instant for ever."""

    def receive_datagram(self, data: bytes, addr: Endpoint, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[Transmit]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class NatBox(Protocol):
    """A NAT between a LAN of private hosts and the internet, as the simulated network uses it.

    ``outbound`` is asked for every datagram that a host behind the box sends to the internet: it
    returns the translated source endpoint (creating or refreshing a mapping), or None to drop the
    datagram (e.g. the port pool is exhausted). ``inbound`` is asked for every datagram that arrives at
    ``public_ip`` from the internet: it returns the private endpoint to deliver to, or None when the
    box's filtering rejects it. A box may also have a boolean ``hairpin`` attribute: when it is true, a
    LAN host may reach another LAN host through the box's public address; otherwise such datagrams
    are dropped (most home routers of the NAT Check survey did not hairpin)."""

    @property
    def public_ip(self) -> str: ...

    def outbound(self, src: Endpoint, dst: Endpoint, now: float) -> Endpoint | None: ...

    def inbound(self, src: Endpoint, dst: Endpoint, now: float) -> Endpoint | None: ...
