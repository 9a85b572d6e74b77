"""Pure. DATA that reached a responder before the HS_FIN that makes its session usable.

An initiator may seal DATA as soon as it has sent HS_FIN, and the network may deliver that DATA first:
the simulator's jitter reorders datagrams sent a few milliseconds apart, as the internet does. The
responder cannot open it yet (only HS_FIN's signature proves who the initiator is), and dropping it
would lose the first messages of most new links. So the responder holds a few such datagrams, still
sealed, and opens them once HS_FIN verifies; they then pass the same replay and AEAD checks as any
DATA. A realm member could open pending sessions just to pin memory here, so the hold is bounded per
session and in total, and it is forgotten with the pending session.
"""

from __future__ import annotations

from collections.abc import Container

from .linkwire import LinkDecodeError

EARLY_PER_SESSION = 4
"""Datagrams held per pending session. An initiator's first burst after HS_FIN is a handful of
control messages (hello, neighbour lists); more than that waits for the confirmation anyway."""

EARLY_BUDGET_BYTES = 256 * 1024
"""Bytes held over all pending sessions together: bounds the memory an abusive realm member can pin
(at most ``max_pending`` sessions exist), while leaving room for every honest link set up at once."""


class EarlyData:
    """Sealed DATA held per pending responder session index."""

    __slots__ = ("_bytes", "_held")

    def __init__(self) -> None:
        self._held: dict[int, list[bytes]] = {}
        self._bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def hold(self, index: int, data: bytes) -> None:
        """Keep ``data`` for the pending session ``index``. Always raises :class:`LinkDecodeError`:
        ``held_for_fin`` when kept (nothing to deliver yet), ``early_overflow`` when a bound refused
        it."""
        if len(self._held.get(index, ())) >= EARLY_PER_SESSION or (
            self._bytes + len(data) > EARLY_BUDGET_BYTES
        ):
            raise LinkDecodeError("early_overflow")
        self._held.setdefault(index, []).append(data)
        self._bytes += len(data)
        raise LinkDecodeError("held_for_fin")

    def take(self, index: int) -> list[bytes]:
        """The datagrams held for ``index`` (forgetting them), oldest first."""
        held = self._held.pop(index, [])
        self._bytes -= sum(len(d) for d in held)
        return held

    def purge(self, live: Container[int]) -> None:
        """Forget what is held for sessions no longer pending (expired, evicted, refused)."""
        for index in [i for i in self._held if i not in live]:
            self.take(index)
