"""Pure. What a node can tell about a position from its ring neighbourhood alone.

A node knows itself and its ring neighbours (typically two per side), nothing beyond. For a position
p the *desired holders* are the ``1 + copies`` nodes closest to p; a node computes them among the
nodes it knows. How far to trust that:

* "I am not among them" is always right: a node we do not know can only be closer to p than we are,
  never push us back up.
* "I am among them" is right only if no unknown node could be closer to p than we are. Every unknown
  node lies beyond our farthest neighbour on one side or the other, so it is farther from p than that
  neighbour; if we are no farther from p than both farthest neighbours, our rank is *certain*. With
  two neighbours per side this often fails for the second and third holders: p's far side is beyond
  their view.
* The node closest to p (the primary) with two neighbours per side knows the three closest exactly:
  p lies between it and one of its nearest neighbours, and the next candidates on both sides are
  within two hops. So the primary can tell an unsure holder whether it is still one.

Positions outside the arc from our farthest left to our farthest right neighbour are beyond what we
can rank: their holders are found by routing to p instead. When the two sides of the neighbourhood
overlap, the ring is small and the view covers all of it; a side where we know nobody yet (a node
still joining) makes nothing on that side certain.
"""

from __future__ import annotations

from collections.abc import Iterable

from overlay import Address, clockwise, distance_key


class View:
    def __init__(self, me: Address, copies: int) -> None:
        self.me = me
        self.holders = 1 + copies
        self.left: tuple[Address, ...] = ()
        self.right: tuple[Address, ...] = ()
        self.members: dict[Address, None] = {}
        """Distinct neighbours, left ones first (insertion order: deterministic iteration)."""
        self._whole_ring = True

    def update(self, left: Iterable[Address], right: Iterable[Address]) -> None:
        self.left = tuple(a for a in left if a != self.me)
        self.right = tuple(a for a in right if a != self.me)
        self.members = dict.fromkeys((*self.left, *self.right))
        alone = not self.left and not self.right
        self._whole_ring = alone or bool(set(self.left) & set(self.right))

    def in_span(self, pos: Address) -> bool:
        """Whether ``pos`` lies on the arc from our farthest left to our farthest right neighbour."""
        if self._whole_ring:
            return True
        lo = self.left[-1] if self.left else self.me
        hi = self.right[-1] if self.right else self.me
        return clockwise(lo, pos) <= clockwise(lo, hi)

    def _known_rank(self, pos: Address, node: Address) -> bool:
        """True when no node we do not know can be closer to ``pos`` than ``node``."""
        if self._whole_ring:
            return True
        if not self.left or not self.right or not self.in_span(pos):
            return False
        d = distance_key(pos, node)
        return d <= distance_key(pos, self.left[-1]) and d <= distance_key(pos, self.right[-1])

    def certain(self, pos: Address) -> bool:
        """True when we know for sure whether we are a desired holder of ``pos``."""
        return self.me not in self.desired(pos) or self._known_rank(pos, self.me)

    def knows_holders(self, pos: Address) -> bool:
        """True when :meth:`desired` is exactly the set of desired holders of ``pos``."""
        return self._known_rank(pos, self.desired(pos)[-1])

    def desired(self, pos: Address, extra: Address | None = None) -> list[Address]:
        """The desired holders of ``pos`` among the nodes we know (and ``extra``), closest first."""
        nodes = [self.me, *self.members]
        if extra is not None and extra not in self.members and extra != self.me:
            nodes.append(extra)
        nodes.sort(key=lambda a: distance_key(pos, a))
        return nodes[: self.holders]
