"""Pure. The data plane's fast path through the overlay node: application messages to and from peers on
direct links, without the per-message objects of the ordinary path, and the path MTU of those links.

Theory of operation. The ordinary path (``OverlayNode.send``) wraps every message, seals it, queues a
``Transmit`` and, at the other end, emits a ``Delivered`` event: a few objects and calls per message,
fine for control traffic and the DHT, too many for tens of thousands of frames a second. For a peer
on a direct link (an underlay endpoint, not a tunnel) the data plane asks instead:

- :meth:`DataPath.direct_limit`: the largest payload one datagram carries to the peer now, from the
  link's measured path MTU (``linkmtu``; measuring starts with the first question, so only links that
  carry data are probed);
- :meth:`DataPath.seal_direct`: seal a whole batch of payloads with the link's session (one cached
  AEAD per session) and return the datagrams for the driver to send together (UDP_SEGMENT);
- :meth:`DataPath.too_big`: a datagram the local kernel refused as too big (EMSGSIZE), which the
  path MTU search takes into account at once.

On the receiving side, a service registered in :attr:`DataPath.receivers` gets its messages from
direct links by one call each. Once a session has delivered such a message, the driver hands its
later datagrams to :meth:`DataPath.receive` first (:meth:`DataPath.receive_many`: every datagram of
one UDP_GRO read in one call), which opens them and calls the receiver without the node's general
dispatch; anything else (control, probes, a datagram that does not open) goes the ordinary way. A
service may register an :class:`AppSink` instead (:meth:`DataPath.set_sink`): its messages are
decrypted straight into the sink's buffer (``Session.open_many``), where the data plane builds its
TAP frames in place. Keepalives,
handshakes and probes keep the ordinary path, processed in the same wake-ups as data, and every
authenticated datagram refreshes its link's liveness: a busy link is never declared dead.

Probes are sealed link messages padded to the probed size (``linkmtu``): the peer acknowledges each
one; the timers of every link's search run on the node's timer heap (kind ``"pmtu"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .address import Address
from .events import Endpoint, MayFragment
from .linkmtu import ASSUMED_PAYLOAD as _ASSUMED
from .linkmtu import LinkMtus, probe_ack, probe_plaintext, probe_size
from .linksession import PlaintextSink, Session, SessionState
from .linkwire import DATA_HEADER_BYTES, DATA_OVERHEAD, PACKET_DATA, LinkDecodeError
from .pmtu import PmtuConfig
from .table import Link
from .wire import KIND_APP, KIND_PROBE

if TYPE_CHECKING:
    from .node import OverlayNode

APP_HEADER = 2
"""Bytes an application message adds inside a sealed datagram: the kind and the service."""

ALWAYS_FITS = PmtuConfig().min_size
"""Datagrams up to this size fit every path (576-byte IPv4): above it, the node asks
:meth:`DataPath.mark_oversized` whether its link is known to carry one."""

MAX_PROBES_KEPT = 64
"""Probes remembered per link (by their DATA header, whose session index and counter no other
datagram repeats): a search sends about a dozen, confirmations one each."""


def app_prefix(service: int) -> bytes:
    """The application header (:data:`APP_HEADER` bytes) of ``service``'s messages: what a payload
    handed to :meth:`DataPath.seal_direct` with ``prefixed=True`` begins with."""
    return bytes((KIND_APP, service))


class AppReceiver(Protocol):
    """Takes a service's messages from direct links by a call (the data plane's fast path)."""

    def app_message(self, src: Address, plaintext: bytes, now: float) -> None:
        """A message from the link peer ``src``; its payload is ``plaintext[APP_HEADER:]``. Must not
        raise: the bytes are authenticated, but their content is the peer's."""
        ...


class AppSink(PlaintextSink, Protocol):
    """Takes a service's messages from direct links into its own buffer: the data path decrypts each
    datagram straight where the sink says (``ipop.fastpath`` builds its TAP frames there). ``opened``
    gets the messages of the sink's service (the payload after :data:`APP_HEADER`); the others take
    the ordinary way."""


class DataPath:
    """The fast path of one node (see the module's docstring)."""

    __slots__ = (
        "_armed",
        "_probes",
        "_sessions",
        "_sink",
        "_sink_prefix",
        "mtus",
        "node",
        "receivers",
        "rx_bytes",
        "rx_datagrams",
    )

    def __init__(self, node: OverlayNode, pmtu: PmtuConfig | None) -> None:
        self.node = node
        self.mtus: LinkMtus | None = LinkMtus(pmtu) if pmtu is not None else None
        """Path MTU of the direct links that carry application data (None: not measured, as in the
        simulator, whose network has no MTU)."""
        self.receivers: dict[int, AppReceiver] = {}
        self._armed: dict[Address, float] = {}
        self._probes: dict[Address, set[bytes]] = {}
        """DATA headers of the path MTU probes sent on each link (at most ``MAX_PROBES_KEPT`` each): a
        refused datagram among them is a probe, never sent again fragmented. By content, not size:
        a DHT message of a probe's size must still go."""
        self._sessions: dict[int, tuple[Session, Link]] = {}
        """Receiver index -> session and link of the direct links whose data :meth:`receive` takes."""
        self._sink: AppSink | None = None
        self._sink_prefix = b""
        self.rx_datagrams = 0
        """Datagrams :meth:`receive` took (the node's own counters do not see them)."""
        self.rx_bytes = 0

    # -- receiving -----------------------------------------------------------------------------------

    def receive(self, data: bytes | memoryview, addr: Endpoint, now: float) -> bool:
        """Take a DATA datagram of a known direct-link session: open it and deliver it. False when
        it is not one (the caller gives it to ``OverlayNode.receive_datagram``, which also counts
        and explains whatever does not open). Never raises. ``data`` may be a view of one of the
        datagrams of a UDP_GRO read: only the opened plaintext (a new object) is kept."""
        return not self.receive_many((data,), addr, now)

    def receive_many(
        self, parts: Sequence[bytes | memoryview], addr: Endpoint, now: float
    ) -> list[bytes | memoryview]:
        """:meth:`receive` for every datagram of one read from ``addr`` (a UDP_GRO buffer cut into its
        datagrams), in one call: consecutive datagrams of one session are looked up once and, with a
        sink, opened together (``Session.open_many``). Returns the datagrams it did not take, in
        order, for the node."""
        rest: list[bytes | memoryview] = []
        sessions = self._sessions
        i, n = 0, len(parts)
        while i < n:
            data = parts[i]
            if len(data) < DATA_OVERHEAD or data[1] != PACKET_DATA:
                rest.append(data)
                i += 1
                continue
            key = data[2:6]
            j = i + 1
            while (
                j < n
                and parts[j][2:6] == key
                and len(parts[j]) >= DATA_OVERHEAD
                and parts[j][1] == PACKET_DATA
            ):
                j += 1
            group = parts[i:j]
            i = j
            entry = sessions.get(int.from_bytes(key, "big"))
            if entry is None or entry[1].endpoint != addr:  # unknown, or roaming: the node's path
                rest += group
                continue
            session, link = entry
            if self._sink is None:
                rest += [d for d in group if not self._receive_one(session, link, d, addr, now)]
                continue
            failed, others = session.open_many(group, now, self._sink, self._sink_prefix)
            taken = len(group) - len(failed)
            if taken:
                self.rx_datagrams += taken
                self.rx_bytes += sum(map(len, group)) - sum(map(len, failed))
                link.last_rx = now
                link.probe_tries = 0
                if taken > len(others):  # the sink got messages (keepalives are not application data)
                    link.last_app = now
                for plaintext in others:
                    self._deliver(session, link, plaintext, addr, now)
            if failed:
                if session.state is SessionState.CLOSED:
                    sessions.pop(session.index, None)
                rest += failed
        return rest

    def _receive_one(
        self, session: Session, link: Link, data: bytes | memoryview, addr: Endpoint, now: float
    ) -> bool:
        """Open one datagram of ``session`` the ordinary way (no sink) and deliver it."""
        try:
            plaintext = session.open(data, int.from_bytes(data[6:14], "big"), now)
        except LinkDecodeError:
            if session.state is SessionState.CLOSED:
                self._sessions.pop(session.index, None)
            return False
        self.rx_datagrams += 1
        self.rx_bytes += len(data)
        link.last_rx = now
        link.probe_tries = 0
        self._deliver(session, link, plaintext, addr, now)
        return True

    def _deliver(self, session: Session, link: Link, plaintext: bytes, addr: Endpoint, now: float) -> None:
        """An opened plaintext that no sink took: its receiver, or the node's dispatch."""
        if len(plaintext) >= APP_HEADER and plaintext[0] == KIND_APP:
            receiver = self.receivers.get(plaintext[1])
            if receiver is not None:
                link.last_app = now
                receiver.app_message(link.peer, plaintext, now)
                return
        self.node.on_plaintext(session, plaintext, addr, now)

    def set_sink(self, service: int, sink: AppSink | None) -> None:
        """Decrypt ``service``'s messages from learnt direct-link sessions into ``sink`` (None: stop)."""
        self._sink = sink
        self._sink_prefix = bytes((KIND_APP, service))

    def learn(self, session: Session, link: Link) -> None:
        """``session`` of the direct ``link`` delivered to a receiver: take its later datagrams."""
        if link.endpoint is not None and session.index not in self._sessions:
            self._sessions[session.index] = (session, link)

    # -- sending -------------------------------------------------------------------------------------

    def direct_limit(self, dest: Address, now: float) -> int:
        """The largest application payload one datagram carries to ``dest`` over a direct link now; 0
        when there is no direct link (then ``OverlayNode.send`` routes)."""
        link = self.node.table.get(dest)
        if link is None or link.endpoint is None or not link.sessions:
            return 0
        mtus = self.mtus
        if mtus is None:
            return _ASSUMED - DATA_OVERHEAD - APP_HEADER
        if dest not in mtus:
            self._send_probes(link, mtus.start(dest, now), now)
        return mtus.limit(dest) - DATA_OVERHEAD - APP_HEADER

    def seal_direct(
        self, dest: Address, service: int, payloads: list[Any], now: float, *, prefixed: bool = False
    ) -> tuple[Endpoint, list[bytes]] | None:
        """Seal ``payloads`` (bytes-like, each at most :meth:`direct_limit` long) as application
        messages to ``dest``: the endpoint and the datagrams, to be sent together. None when there is
        no direct link or no session to seal with (the caller falls back to the ordinary path).
        ``prefixed``: each payload already begins with :func:`app_prefix` of ``service`` (and is at
        most :data:`APP_HEADER` longer): a caller that builds its messages anyway leaves room for the
        header and spares a copy of every payload here (1.4 us per 64 KiB frame)."""
        node = self.node
        link = node.table.get(dest)
        if link is None or link.endpoint is None:
            return None
        session = node.sending_session(link)
        if session is None:
            return None
        seal = session.seal
        try:
            if prefixed:
                datagrams = [seal(payload, now) for payload in payloads]
            else:
                prefix = app_prefix(service)
                datagrams = [seal(prefix + payload, now) for payload in payloads]
        except (ValueError, RuntimeError):  # counter exhausted, or the session is closing
            node.counters["tx_seal_refused"] += 1
            return None
        link.last_tx = link.last_app = now
        mtus = self.mtus
        if (
            mtus is not None
            and datagrams
            and len(datagrams[0]) > mtus.config.base
            and mtus.sent_full(dest, now)
        ):
            self._arm(dest)
        return link.endpoint, datagrams

    def too_big(self, addr: Endpoint, datagram: bytes, now: float) -> bool:
        """The driver could not send ``datagram`` to ``addr``: EMSGSIZE, larger than
        the local interface allows with DF. Returns whether the driver should send it again with
        fragmentation allowed: every datagram but a path MTU probe.

        Why. DF is on for every datagram (the driver's fast mode), yet only the data plane's datagrams
        are sized to the path. A DHT message may take 4 kB (a sync answer, a get reply with several
        values), an overlay control message more than one Ethernet frame: refused with DF, each was
        lost without a trace, and its resends the same way. A restarted node's sync answers from its
        neighbours were lost so, and after the sync timeout it answered gets as ready with an empty
        store (the VPN suite saw a held address read as free). Fragmented, they arrive. A probe must
        not: its loss is its answer."""
        node = self.node
        node.counters["tx_too_big"] += 1
        if self.mtus is None:
            node.counters["tx_fragmented"] += 1
            return True
        size = len(datagram)
        header = bytes(datagram[:DATA_HEADER_BYTES])
        probe = False
        for link in list(node.table):
            if link.endpoint == addr and link.peer in self.mtus:
                probe |= header in self._probes.get(link.peer, ())
                self._send_probes(link, self.mtus.too_big(link.peer, size, now), now)
        if not probe:
            node.counters["tx_fragmented"] += 1
        return not probe

    def confirmed_size(self, peer: Address) -> int | None:
        """The largest datagram the direct link to ``peer`` is known to carry: its path MTU as far as
        probes confirmed it, the base size before any; None when nothing is measured (the simulator)."""
        if self.mtus is None:
            return None
        path = self.mtus.path(peer)
        return self.mtus.config.base if path is None else path.mtu

    def mark_oversized(self, peer: Address, datagram: bytes) -> bytes:
        """``datagram`` for the link to ``peer`` as it should be sent: :class:`MayFragment` (DF off)
        when larger than the link is known to carry, as a control or DHT message may be."""
        limit = self.confirmed_size(peer)
        if limit is None or len(datagram) <= limit:
            return datagram
        self.node.counters["tx_fragmented"] += 1
        return MayFragment(datagram)

    # -- hooks of the node -----------------------------------------------------------------------------

    def forget(self, peer: Address) -> None:
        """The link to ``peer`` is gone."""
        if self.mtus is not None:
            self.mtus.forget(peer)
        self._probes.pop(peer, None)
        for index in [i for i, (_, link) in self._sessions.items() if link.peer == peer]:
            del self._sessions[index]

    def endpoint_changed(self, link: Link, now: float) -> None:
        if self.mtus is not None and link.peer in self.mtus:
            self._send_probes(link, self.mtus.endpoint_changed(link.peer, now), now)

    def on_probe(self, link: Link, kind: int, plaintext: bytes, now: float) -> None:
        """A probe (answered) or a probe's acknowledgement (fed to the link's search)."""
        size = probe_size(plaintext)
        if size is None:
            self.node.counters["rx_malformed"] += 1
        elif kind == KIND_PROBE:
            if size == len(plaintext) + DATA_OVERHEAD:  # what it claims is what arrived
                self.node.send_plain(link, probe_ack(size), now)
        elif self.mtus is not None and link.peer in self.mtus:
            self._send_probes(link, self.mtus.acked(link.peer, size, now), now)

    def on_timer(self, peer: Address, now: float) -> None:
        self._armed.pop(peer, None)
        link = self.node.table.get(peer)
        if self.mtus is None or link is None or peer not in self.mtus:
            return
        self._send_probes(link, self.mtus.on_timer(peer, now), now)

    def mtu_status(self, peer: Address) -> dict[str, object] | None:
        return None if self.mtus is None else self.mtus.status(peer)

    # -- probes ----------------------------------------------------------------------------------------

    def _send_probes(self, link: Link, sizes: list[int], now: float) -> None:
        node = self.node
        session = node.sending_session(link)
        if link.endpoint is not None and session is not None:
            for size in sizes:
                try:
                    datagram = session.seal(probe_plaintext(size, DATA_OVERHEAD), now)
                except (ValueError, RuntimeError):
                    break
                node.counters["tx_mtu_probes"] += 1
                sent = self._probes.setdefault(link.peer, set())
                if len(sent) >= MAX_PROBES_KEPT:
                    sent.clear()
                sent.add(bytes(datagram[:DATA_HEADER_BYTES]))
                node.transmit(datagram, link.endpoint, now)
        self._arm(link.peer)

    def _arm(self, peer: Address) -> None:
        """Put the link's next deadline on the node's timer heap, unless an earlier one is there."""
        assert self.mtus is not None
        when = self.mtus.deadline(peer)
        armed = self._armed.get(peer)
        if when is not None and (armed is None or when < armed):
            self._armed[peer] = when
            self.node.set_timer(when, "pmtu", peer)
