"""Pure. Which of a link's sessions to seal with, and when the others go.

A link can hold more than one session: both ends may open one at the same moment (each initiated before
hearing of the other), and a rekey adds a new one beside the old. Both ends must come to seal with the
same one, so that the others fall idle and can be closed, and they must agree without a message.
"""

from __future__ import annotations

from .address import Address
from .linksession import Session

SESSION_EPOCH_S = 10.0
"""Sessions of one link created less than this apart belong to one epoch: a simultaneous open (both
ends initiated at once, a round trip apart); a rekey comes ``rekey_s`` later and starts a new epoch."""


def preferred_session(sessions: list[Session], me: Address) -> Session | None:
    """The newest epoch's confirmed session whose initiator has the higher address. Both ends of a link
    compute the same answer without talking (each sees the same sessions, at times that differ by
    about a round trip), so after a simultaneous open they seal with the same session and the other
    one falls idle and is closed."""
    best: Session | None = None
    best_key: tuple[int, bool] = (-1, False)
    epoch = 0
    previous: float | None = None
    for session in sorted(sessions, key=lambda s: s.created_at):
        if previous is not None and session.created_at - previous > SESSION_EPOCH_S:
            epoch += 1
        previous = session.created_at
        if not session.confirmed:
            continue
        higher = (me > session.peer_address) == session.initiator
        key = (epoch, higher)
        if key >= best_key:
            best, best_key = session, key
    if best is None:
        return sessions[-1] if sessions else None
    return best
