"""DHT messages larger than one Ethernet frame, between real ``ipop up`` processes in namespaces whose
veths have the usual MTU of 1,500 bytes.

A real node's socket sets DF on every datagram (the data plane measures each path itself), but only
the data plane sizes its datagrams to the path: a get reply with a few large values, a replication
push or a sync answer takes up to 4 kB. Refused by the interface with EMSGSIZE, each was lost, and
its resends the same way; the driver now sends such a datagram again with fragmentation allowed.
Over loopback (MTU 65,536) none of this shows, hence veths.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ipop.vpnlab import Cluster, VpnNode
from tests.netns import have_root, lab, wait_for

pytestmark = pytest.mark.system


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[list[VpnNode]]:
    if not have_root():
        pytest.fail("system tests need root (CI runs as root); run `sudo make test`")
    with lab(tmp_path) as the_lab:
        cluster = Cluster(the_lab)
        nodes = [cluster.boot, *(cluster.node(f"d{i}", network=False) for i in range(1, 4))]
        for node in nodes:
            wait_for(lambda n=node: n.status()["overlay"]["state"] == "joined", 30, f"{node.name} to join")
        yield nodes


def test_a_get_reply_larger_than_the_underlay_mtu_arrives(ring: list[VpnNode]) -> None:
    writer, reader = ring[1], ring[3]
    mtu = writer.sh("cat", "/sys/class/net/eth0/mtu").stdout.strip()
    assert mtu == "1500"
    values = [f"{i}:" + "x" * 1000 for i in range(4)]  # about 5 kB of records under one key
    for value in values:
        done = writer.cli("dht", "put", "big", value, "--ttl", "600")
        assert done.returncode == 0, done.stderr
    got = reader.cli("dht", "get", "big", "--json")
    assert got.returncode == 0, got.stderr
    assert sorted(v["value"] for v in json.loads(got.stdout)) == values
    fragmented = sum(n.status()["overlay"]["counters"].get("tx_fragmented", 0) for n in ring)
    assert fragmented > 0  # the replies (and pushes) went out as IP fragments
