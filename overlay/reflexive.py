"""Pure. Where this node can be reached: its own socket's addresses, and what its peers see.

Every link peer tells us the endpoint it sees our packets come from (in ``Hello`` and ``Pong``). Behind a
NAT that is our public (server-reflexive) endpoint, found without any STUN server; behind an
address-dependent NAT different peers see different ports, so a few are kept, newest first.
"""

from __future__ import annotations

from typing import Any

from .events import Endpoint

MAX_REFLEXIVE = 4
"""Reflexive endpoints remembered (peers may see us at different ones behind an address-dependent NAT)."""

MAX_CANDIDATES = 8
"""Candidates offered to a peer: every one costs a probe per punch round."""

_WILDCARDS = ("0.0.0.0", "::")


class Reflexive:
    def __init__(self, local_endpoints: tuple[Endpoint, ...]) -> None:
        self.local = tuple(ep for ep in local_endpoints if ep[0] not in _WILDCARDS)
        self._seen: list[tuple[Endpoint, int]] = []

    def observed(self, peer: int, endpoint: Endpoint | None) -> None:
        """``peer`` sees this node at ``endpoint``."""
        if endpoint is None or endpoint in self.local:
            return
        entry = (endpoint, peer)
        if entry in self._seen:
            return
        self._seen = [e for e in self._seen if e[1] != peer][-(MAX_REFLEXIVE - 1) :]
        self._seen.append(entry)

    def candidates(self) -> tuple[Endpoint, ...]:
        """Our own socket's addresses, then what peers see, newest first."""
        seen = list(self.local)
        for endpoint, _ in reversed(self._seen):
            if endpoint not in seen:
                seen.append(endpoint)
        return tuple(seen[:MAX_CANDIDATES])

    def status(self) -> dict[str, Any]:
        return {"reflexive": sorted({f"{h}:{p}" for (h, p), _ in self._seen})}
