"""Where a connect-to-me's answer goes (``Signalling._on_connect``): back over the requester's own
link when the request came over it, through ``reply_via`` otherwise."""

from __future__ import annotations

from overlay import Cluster, Member
from overlay.table import FAR


def ring(seed: int) -> tuple[Cluster, list[Member]]:
    cluster = Cluster(seed, trace=False)
    boot = cluster.add_node()
    cluster.set_bootstrap([boot])
    members = [boot, *(cluster.add_node() for _ in range(7))]
    assert cluster.run_until_consistent(60.0) is not None
    cluster.scheduler.run_for(30.0)
    return cluster, members


def test_a_request_that_came_over_the_requesters_link_is_answered_over_it() -> None:
    """The requester names as ``reply_via`` the peer it joined through, which has since crashed
    (in the flash crowd that showed this, its ring neighbourhood was still settling): an answer
    routed there was lost, and a joiner probing for its own position joined 15 s late. The node
    that got the request straight from the requester answers over that link."""
    cluster, members = ring(3)
    requester = members[1]
    link = next(lk for lk in requester.node.table if lk.direct and lk.sessions)
    answerer = next(m for m in members if m.node.address == link.peer)
    gone = next(m for m in members if m not in (requester, answerer))
    cluster.kill(gone)
    connector = requester.node.connector
    attempt = connector.connect_address(
        answerer.node.address, FAR, cluster.now, exact=False, reply_via=gone.node.address
    )
    requester.host.poke()
    assert attempt is not None
    cluster.scheduler.run_for(0.9)  # before the first resend
    assert attempt not in connector.attempts, "the answer did not arrive"
    assert requester.node.table.get(answerer.node.address) is link
