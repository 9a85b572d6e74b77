"""System tests of issue 5: the node in interface mode, end to end, with real processes and real clients.

One cluster for the module (starting nodes costs seconds; every test reads what it needs from it): a
bootstrap node with a stub DNS server beside it on the underlay, and four members — two with ISC
dhclient, two with busybox udhcpc. Later tests add nodes with static addresses, a node of another
namespace and one with the wrong secret; the last stops a member for good and waits for its address to
come free, which takes up to one lease time (60 s, the least the configuration allows).
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import time
from collections.abc import Iterator

import pytest

from tests.ipop.vpnlab import SERVER, Cluster, VpnNode, dig, ping
from tests.netns import have_root, lab, wait_for

pytestmark = pytest.mark.system
SUBNET = ipaddress.IPv4Network("10.250.0.0/16")
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not have_root():
        pytest.fail("system tests need root (CI runs as root); run `sudo make test`")
    with lab(tmp_path_factory.mktemp("vpn")) as the_lab:
        c = Cluster(the_lab)
        members = [c.node(name) for name in ("m1", "m2", "m3", "m4")]
        for m in members:
            m.wait_joined()
        members[0].dhclient("alpha")
        members[1].udhcpc("bravo")
        members[2].dhclient("charlie")
        members[3].udhcpc("delta")
        for m in members:
            m.wait_address()
        yield c
        if FIGURES:
            print("\nfigures:", json.dumps(FIGURES))


def members(c: Cluster) -> list[VpnNode]:
    return [c.nodes[n] for n in ("m1", "m2", "m3", "m4")]


def test_dhcp_clients_get_distinct_addresses_and_the_node_as_resolver(cluster: Cluster) -> None:
    addresses = [m.address() for m in members(cluster)]
    assert len(set(addresses)) == 4 and all(ipaddress.IPv4Address(a) in SUBNET for a in addresses)
    m1, m2 = cluster.nodes["m1"], cluster.nodes["m2"]
    assert m1.lease()["new_domain_name_servers"] == SERVER and m1.lease()["new_domain_search"] == "ipop."
    assert m2.lease()["dns"] == SERVER and m2.lease()["mtu"] == str(m2.network()["mtu"])
    status = m1.network()
    assert [a["state"] for a in status["addresses"]] == ["held"] and len(status["leases"]) == 1
    assert {n["name"] for n in status["names"]} == {"m1", "alpha"}


def test_ping_by_name_both_ways(cluster: Cluster) -> None:
    m1, m2 = cluster.nodes["m1"], cluster.nodes["m2"]
    wait_for(lambda: ping(m1, "m2.ipop"), 20, "m1 to ping m2.ipop")
    wait_for(lambda: ping(m2, "alpha"), 20, "m2 to ping alpha (the search domain)")
    assert ping(m1, "bravo.ipop", count=3, wait=1)


def test_dig_members_static_names_ptr_and_forwarded_names(cluster: Cluster) -> None:
    m1, m3 = cluster.nodes["m1"], cluster.nodes["m3"]
    ip3 = m3.address()
    assert ip3 is not None
    assert dig(m1, "+short", "m3.ipop").stdout.split() == [ip3]
    assert dig(m1, "+short", "charlie.ipop").stdout.split() == [ip3]
    _, b, c, d = (int(x) for x in ip3.split("."))
    static = f"C{b:03d}{c:03d}{d:03d}.ipop"
    assert dig(m1, "+short", static).stdout.split() == [ip3]
    assert dig(m1, "+short", "-x", ip3).stdout.split() == [static + "."]
    aaaa = dig(m1, "m3.ipop", "AAAA")
    assert "status: NOERROR" in aaaa.stdout and "ANSWER: 0" in aaaa.stdout
    assert "status: NXDOMAIN" in dig(m1, "nobody.ipop").stdout
    assert dig(m1, "+short", "www.stub.test").stdout.split() == ["192.0.2.53"]
    queries = [json.loads(line) for line in cluster.stub.stdout().splitlines() if '"query"' in line]
    assert any(q["name"] == "www.stub.test" and q["from"] == m1.underlay_ip for q in queries)
    times = []
    for _ in range(5):
        out = dig(m1, "m3.ipop").stdout
        times.append(float(re.search(r"Query time: (\d+) msec", out).group(1)))  # type: ignore[union-attr]
    FIGURES["dns_ms_p50"] = sorted(times)[len(times) // 2]


def test_arp_for_a_member_is_answered_by_the_node(cluster: Cluster) -> None:
    m1, m2 = cluster.nodes["m1"], cluster.nodes["m2"]
    ip2 = m2.address()
    assert ip2 is not None
    out = m1.sh("arping", "-c", "2", "-w", "5", "-I", "ipop0", ip2, check=False).stdout
    assert re.search(r"from fe:fd:", out, re.IGNORECASE), out


def test_a_broadcast_reaches_every_member(cluster: Cluster) -> None:
    everyone = members(cluster)
    wait_for(
        lambda: all(m.network()["members"]["others"] >= 3 for m in everyone), 45, "every member to be listed"
    )
    out = everyone[0].sh("ping", "-n", "-b", "-c", "3", "-W", "2", "10.250.255.255", check=False).stdout
    answered = set(re.findall(r"from (10\.250\.\d+\.\d+)", out))
    assert answered >= {m.address() for m in everyone[1:]}, out


def test_iperf3_completes(cluster: Cluster) -> None:
    m1, m2 = cluster.nodes["m1"], cluster.nodes["m2"]
    ip2 = m2.address()
    assert ip2 is not None
    server = cluster.lab.start("iperf3-server", ["iperf3", "-s", "-1", "--forceflush", "-B", ip2], ns=m2.ns)
    wait_for(lambda: "listening" in server.stdout().lower() or not server.alive(), 10, "iperf3 -s")
    proc = m1.sh("iperf3", "-c", ip2, "-t", "3", "-J", check=False, timeout=30)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    result = json.loads(proc.stdout)
    FIGURES["iperf3_gbps"] = round(result["end"]["sum_received"]["bits_per_second"] / 1e9, 3)
    assert result["end"]["sum_received"]["bytes"] > 0


def test_two_machines_with_one_static_address(cluster: Cluster) -> None:
    m1 = cluster.nodes["m1"]
    target = m1.address()
    assert target is not None
    s1, s2 = cluster.node("s1"), cluster.node("s2")
    for s in (s1, s2):
        s.wait_joined()
    s1.sh("ip", "addr", "add", "10.250.99.99/16", "dev", "ipop0")
    wait_for(lambda: ping(s1, target), 20, "the first static machine to reach m1")
    s2.sh("ip", "addr", "add", "10.250.99.99/16", "dev", "ipop0")
    assert not ping(s2, target, count=3, wait=1)
    conflict = s2.network()
    assert [a["state"] for a in conflict["addresses"]] == ["conflict"]
    assert conflict["counters"].get("conflict_dropped", 0) > 0
    assert ping(s1, target)  # the winner is undisturbed
    assert "address conflict: 10.250.99.99" in s2.process.stderr()  # type: ignore[union-attr]


def test_another_namespace_on_the_same_overlay_sees_nothing(cluster: Cluster) -> None:
    m1 = cluster.nodes["m1"]
    target = m1.address()
    assert target is not None
    other = cluster.node("o1", namespace="other")
    other.wait_joined()
    other.udhcpc("oscar")
    mine = other.wait_address()
    assert ipaddress.IPv4Address(mine) in SUBNET
    assert not ping(other, target, count=2, wait=1)
    assert "status: NXDOMAIN" in dig(other, "m1.ipop").stdout
    assert other.network()["members"]["others"] == 0


def test_a_node_with_the_wrong_secret_gets_no_address_and_no_traffic(cluster: Cluster) -> None:
    m1 = cluster.nodes["m1"]
    target = m1.address()
    assert target is not None
    wrong = cluster.node("w1", secret="not-the-secret-of-this-overlay")
    client = wrong.udhcpc("whiskey", once=True, tries=3)
    wait_for(lambda: not client.alive(), 20, "udhcpc to give up")
    assert wrong.address() is None and wrong.network()["addresses"] == []
    wrong.sh("ip", "addr", "add", "10.250.98.98/16", "dev", "ipop0")
    assert not ping(wrong, target, count=2, wait=1)
    assert not wrong.network()["joined"]


def test_a_restarted_node_gives_the_machine_its_address_back(cluster: Cluster) -> None:
    m1, m2 = cluster.nodes["m1"], cluster.nodes["m2"]
    before = m1.address()
    assert m1.dhcp is not None
    m1.dhcp.stop()
    m1.lease_env.unlink()  # type: ignore[union-attr]
    started = time.monotonic()
    assert m1.process is not None
    m1.process.signal(signal.SIGTERM)
    m1.process.popen.wait(5)
    assert m1.process.popen.returncode == 0 and time.monotonic() - started < 2.0
    assert "Traceback" not in m1.process.stderr()
    m1.start()
    m1.wait_running()
    m1.wait_joined()
    m1.dhclient("alpha")
    assert m1.wait_address() == before
    wait_for(lambda: ping(m2, "alpha.ipop"), 45, "m2 to reach the restarted m1 by name")


def test_a_node_stopped_for_good_frees_its_address_after_the_lease(cluster: Cluster) -> None:
    m1, m4 = cluster.nodes["m1"], cluster.nodes["m4"]
    ip4 = m4.address()
    assert ip4 is not None and m4.dhcp is not None
    m4.dhcp.stop()
    assert m4.stop() == 0
    key = f"dhcp:default:{ip4}"
    still = m1.cli("dht", "get", key, "--json")
    assert still.returncode == 0 and json.loads(still.stdout), still.stderr
    wait_for(
        lambda: json.loads(m1.cli("dht", "get", key, "--json").stdout or "null") == [],
        95,
        f"{ip4} to come free after the lease of the stopped node",
        interval=2.0,
    )
