"""Pure. Why slow gets are slow: a breakdown of the gets of ``ipop simulate --dht`` (issue 3's p99).

A get returns after the fifth consistent answer of eight positions (:mod:`dht.quorum`); it is slow
when fewer than five first requests come back promptly and it has to wait for a resend (or for a
late answer). This module watches every get of the scenario with global knowledge of the simulated
overlay and, for each get slower than ``SLOW_S``, records

* whether the answer that decided it answered a resent request (a first request was lost) or the
  first one (it came late);
* for every position resent before the decision, where its first request was lost: the greedy route
  from the reader to the position as the overlay's tables stood when the get started, hop by hop, and
  whether it led into a node that had died unnoticed at the first hop, at a later hop, or through live
  nodes only (lost another way: a hand-over, a dead node between sending and the next hop noticing);
* how many positions answered without the value (a position whose holders changed and that has not
  received its records yet), since such an answer does not count towards the five.

The route is traced as :mod:`overlay.routing` forwards (the linked peer closest to the target, going
around suspected peers while another way makes progress; the route ends at the node with no peer
closer than itself). Nothing here changes the run: it reads tables and the operations' slots.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dht import GetOp, SlotState
from overlay import Address, Cluster, closer, key_address

SLOW_S = 1.0
"""A get slower than this is analysed: three times the median, about the first resend's wait."""

MAX_TRACE_HOPS = 32


def first_dead_hop(cluster: Cluster, src: Address, target: Address) -> int | None:
    """The hop (1 = the first) at which greedy routing from ``src`` to ``target`` would forward into
    a node that is no longer alive, or None when the route reaches a live node closest to it."""
    members = cluster.members
    here = members.get(src)
    for hop in range(1, MAX_TRACE_HOPS + 1):
        if here is None:
            return hop
        node = here.node
        me = node.address
        nxt = node.table.closest(target, None, node.suspects)
        if node.suspects and nxt is not None and not closer(target, nxt, me):
            nxt = node.table.closest(target)
        if nxt is None or not closer(target, nxt, me):
            return None
        if nxt not in members:
            return hop
        here = members[nxt]
    return None


@dataclass
class _Watch:
    op: GetOp
    started: float
    expected: bytes
    dead_hop: list[int | None]


@dataclass
class GetTail:
    """Collects the breakdown; :meth:`report` gives its JSON fields."""

    cluster: Cluster
    watches: dict[int, _Watch] = field(default_factory=dict)
    gets: int = 0
    first_routes_dead: int = 0
    first_routes: int = 0
    slow: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def started(self, token: int, op: GetOp | None, reader: Address, key: bytes, expected: bytes) -> None:
        """A get began on ``reader``; ``token`` names it until :meth:`finished`."""
        if op is None or op.result is not None:
            return  # finished, or decided within the call that started it: nothing to wait for
        replicas = len(op.phase.slots)
        dead = [first_dead_hop(self.cluster, reader, key_address(key, i)) for i in range(replicas)]
        self.first_routes += replicas
        self.first_routes_dead += sum(d is not None for d in dead)
        self.watches[token] = _Watch(op, self.cluster.now, expected, dead)

    def finished(self, token: int, ok: bool) -> None:
        watch = self.watches.pop(token, None)
        if watch is None:
            return
        self.gets += 1
        now = self.cluster.now
        latency = now - watch.started
        if not ok or latency <= SLOW_S:
            return
        self.slow += 1
        c = self.counts
        slots = watch.op.phase.slots
        answered = [(s.answered_at, i) for i, s in enumerate(slots) if s.answered_at is not None]
        last = max(answered)[1] if answered else None
        if last is not None and slots[last].resent:
            c["decided_by_resent_request"] += 1
        elif last is not None:
            c["decided_by_late_first_answer"] += 1
        resent = [i for i, s in enumerate(slots) if s.resent and s.state is SlotState.DONE]
        c["resent_positions"] += len(resent)
        for i in resent:
            hop = watch.dead_hop[i]
            where = "dead_first_hop" if hop == 1 else "dead_later_hop" if hop else "live_route"
            c["resent_" + where] += 1
        tally = watch.op.tally.answers
        empty = sum(
            1
            for table in tally.values()
            if not any(ident[1] == watch.expected and h.record.kind.is_value for ident, h in table.items())
        )
        c["answers_without_value"] += empty
        c["slow_with_answer_without_value"] += empty > 0
        if len(self.examples) < 12:
            self.examples.append(
                {
                    "latency_s": round(latency, 3),
                    "sends": [s.sends for s in slots],
                    "answered_after_s": [
                        None if s.answered_at is None else round(s.answered_at - watch.started, 3)
                        for s in slots
                    ],
                    "first_dead_hop": watch.dead_hop,
                    "answers_without_value": empty,
                }
            )

    def report(self) -> dict[str, Any]:
        return {
            "get_tail_slow_s": SLOW_S,
            "get_tail_slow_gets": self.slow,
            "get_tail_first_routes_dead_share": (
                round(self.first_routes_dead / self.first_routes, 4) if self.first_routes else None
            ),
            "get_tail_causes": dict(sorted(self.counts.items())),
            "get_tail_examples": self.examples,
        }
