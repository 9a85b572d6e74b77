"""A resend's detour on the real overlay in the simulator: the first hop of a request has died
unnoticed; a request sent the greedy way is lost in it, the same request sent with ``detour`` reaches
the position's closest node through another first hop. Also what ``ipop.gettail`` traces of it."""

from __future__ import annotations

import pytest

from dht.codec import Get, encode
from ipop.gettail import first_dead_hop
from ipop.simulate import WARMUP_S
from overlay import Address, Service, closer, key_address
from tests.dht.simnet import overlay_with_dht, stable_nodes


@pytest.mark.timeout(300)
def test_a_detour_goes_around_a_first_hop_that_died_unnoticed() -> None:
    sim = overlay_with_dht(40, seed=5)
    cluster = sim.cluster
    # Far links fill for a while after the ring converged (``ipop simulate`` waits WARMUP_S): one
    # opened towards the reader in mid-test becomes the greedy first hop and leaves the dead hop as
    # the detour (seen once an unrelated change shifted the random draws).
    cluster.scheduler.run_for(WARMUP_S)
    reader = stable_nodes(sim)[0]
    node = sim.nodes[reader].member.node

    def closest_live(target: Address) -> Address:
        best = next(iter(sim.nodes))
        for a in sim.nodes:
            if closer(target, a, best):
                best = a
        return best

    # A position whose greedy first hop from the reader is an intermediate node (not the position's
    # closest node, which stays alive) and that has a detour.
    for index in range(1000):
        target = key_address(b"detour", index)
        hop = node.table.closest(target, None, node.suspects)
        if (
            hop is not None
            and closer(target, hop, reader)
            and hop != closest_live(target)
            and node.detour_link(target) is not None
        ):
            break
    else:
        pytest.fail("no position with an intermediate first hop and a detour")
    end = closest_live(target)
    assert first_dead_hop(cluster, reader, target) is None
    sim.kill(hop)  # the reader does not know yet
    assert first_dead_hop(cluster, reader, target) == 1
    answered = sim.nodes[end].node.stats

    def send(detour: bool) -> int:
        before = answered.gets_answered
        payload = encode(Get(7, index, b"detour"))
        node.send(target, Service.DHT, payload, cluster.now, exact=False, detour=detour)
        sim.nodes[reader].member.host.poke()
        cluster.scheduler.run_for(0.3)
        return answered.gets_answered - before

    assert send(detour=False) == 0, "the greedy way leads into the dead first hop"
    assert send(detour=True) == 1, "the detour reaches the position's closest node"
    assert node.counters["detours"] == 1
