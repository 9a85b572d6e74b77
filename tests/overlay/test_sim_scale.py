"""A thousand hosts in one process: the engine carries the size the overlay's CI tests need. (Speed is
measured by bench/sim_engine.py, not asserted here; the timeout only stops a runaway.)"""

from __future__ import annotations

from random import Random

import pytest

from overlay import Endpoint, Network, Scheduler
from tests.overlay.sim_doubles import Pinger, TestNat


@pytest.mark.timeout(120)
def test_a_thousand_hosts_ping_for_two_simulated_minutes() -> None:
    master = Random(1000)
    s = Scheduler()
    net = Network(s, Random(master.getrandbits(64)))
    publics: list[Endpoint] = [(f"10.0.{i >> 8}.{i & 255}", 4000) for i in range(1, 701)]
    cores = []
    for ip, port in publics:
        core = Pinger(Random(master.getrandbits(64)), publics, period=2.0, fanout=2, until=100.0)
        net.add_host(ip, port, core)
        cores.append(core)
    for b in range(100):  # 300 hosts behind 100 full-cone NAT boxes, pinging public hosts
        box = TestNat(f"100.64.0.{b + 1}", filtering="none")
        for h in range(3):
            core = Pinger(Random(master.getrandbits(64)), publics, period=2.0, fanout=2, until=100.0)
            net.add_host(f"192.168.1.{h + 2}", 4000, core, nat=box)
            cores.append(core)
    assert len(net.hosts) == 1000
    s.run_until(120.0)
    assert s.next_time() is None
    total = net.counters
    assert total.dropped == 0
    assert total.sent == total.received
    pings = sum(c.fanout for c in cores) * 50  # fifty rounds each, 2 s apart, all before t = 100
    assert total.sent == 2 * pings, "every ping was answered"
    assert all(c.pongs == 100 for c in cores)
