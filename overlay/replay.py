"""Pure. A sliding anti-replay window over 64-bit message counters (RFC 6479, WireGuard style).

A secure link numbers every DATA datagram with a counter that the sender never repeats. The receiver
accepts each counter at most once, tolerates reordering of up to ``REPLAY_WINDOW`` counters behind the
highest one seen, and refuses anything older. Checking is split in two, as WireGuard does:
:meth:`ReplayWindow.could_be_fresh` is a cheap test made *before* the AEAD is asked to authenticate the
datagram, and :meth:`ReplayWindow.mark` records the counter only *after* authentication succeeded, so a
forged datagram (which fails the AEAD) can never move the window or burn a counter.

Representation: ``top`` is the highest counter accepted, and ``holes`` is a bitmap (a Python ``int``)
of the counters *not yet seen* below it: bit ``d`` set means ``top - d`` is still missing. Storing the
holes rather than the seen counters keeps the integer at zero for in-order traffic (the common case on
every link), so an idle window costs a few dozen bytes instead of a 2048-bit integer; a loss creates a
bit that shifts out of the mask once the window has moved past it. Counter 0 counts as seen from the
start: the link protocol spends nonce 0 on the handshake, so a DATA datagram with counter 0 is refused.
"""

from __future__ import annotations

REPLAY_WINDOW = 2048
"""Counters behind the highest one seen that may still arrive. At 1 Gbit/s of 1400-byte datagrams this
is 23 ms of reordering, far more than a UDP path reorders in practice; RFC 6479 suggests a few thousand,
and 2048 bits cost at most 256 bytes even in the worst case of the holes bitmap."""

_MASK = (1 << REPLAY_WINDOW) - 1


class ReplayWindow:
    """The receive side of one key's counter space. Not thread-safe (nothing here is)."""

    __slots__ = ("holes", "top")

    def __init__(self) -> None:
        self.top = 0
        """The highest counter accepted so far (0 before the first one: counters start at 1)."""
        self.holes = 0
        """Bit ``d`` set: counter ``top - d`` has not been accepted yet (``d`` < ``REPLAY_WINDOW``)."""

    def could_be_fresh(self, counter: int) -> bool:
        """True when ``counter`` has not been accepted yet and is not too old. Cheap; call it before
        spending an AEAD operation on the datagram."""
        d = self.top - counter
        if d < 0:
            return True
        return d < REPLAY_WINDOW and (self.holes >> d) & 1 == 1

    def why_stale(self, counter: int) -> str:
        """Why :meth:`could_be_fresh` refused ``counter``: ``"too_old"`` or ``"replay"`` (for counters
        and logs; only called on the drop path)."""
        return "too_old" if self.top - counter >= REPLAY_WINDOW else "replay"

    def mark(self, counter: int) -> bool:
        """Record ``counter`` as seen, once the datagram carrying it was authenticated. Returns False
        (and changes nothing) when the counter was not fresh after all."""
        d = self.top - counter
        if d < 0:
            shift = -d
            if shift >= REPLAY_WINDOW:
                # Every counter in the new window except the new top is still missing.
                self.holes = _MASK & ~1
            else:
                # The old window moves up by ``shift``; counters top+1 .. counter-1 become holes.
                self.holes = ((self.holes << shift) | ((1 << shift) - 2)) & _MASK
            self.top = counter
            return True
        if d >= REPLAY_WINDOW or not (self.holes >> d) & 1:
            return False
        self.holes &= ~(1 << d)
        return True

    def missing(self) -> tuple[int, int]:
        """``(missing, span)``: of the last ``span`` counters (up to ``REPLAY_WINDOW``, the highest
        accepted counting), how many have not arrived. The holes of a path that loses datagrams: a
        loss estimate for free (the newest few may still be in flight, reordered)."""
        return self.holes.bit_count(), min(self.top, REPLAY_WINDOW)
