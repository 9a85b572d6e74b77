"""System tests of issue 6: real ``ipop up`` nodes behind the NAT lab's nftables routers.

One lab for the module (starting nodes costs seconds; every test reads what it needs from it): a public
bootstrap node (a pure overlay node) on the lab's server namespace, and one site per router below, each
with a member node in interface mode whose TAP gets its address from a real DHCP client:

    full full addr addr port port sym sym       one router of each NAT type, two of each for same-type pairs
    port port (router_input="accept")           the conntrack-clash pair
    addr (20 % random loss on its public link)  links still form through loss

The second node of each type asks the lab's STUN server (coturn) and must report its NAT type (mapping
from peers and STUN, filtering from the RFC 5780 checks) in ``ipop status``. There is also a second
member on the LAN of the first ``port`` site, which must link to its neighbour over the LAN
(LAN discovery beacons), not through its router (a ``port`` router has no hairpinning) or a relay.

All nodes start at once; then, for every pair of NAT types at once, one node sends a burst of pings to
the other through the VPN. The traffic opens a shortcut link (connect-to-me over the overlay, hole
punching at both ends), and each pair's test checks through ``ipop status --json`` that the pair is
linked directly (an underlay endpoint: the peer's router's public address) where
``nat.pair_is_punchable`` says the lab can, over a relay otherwise, and that pings go through both ways.
The time from a punch's start (the requester has the peer's answer, so both sides know each other) to
the direct link's handshake is read from each node's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from typing import Any

import pytest

from nat import pair_is_punchable
from tests.ipop.vpnlab import VpnNode, node_config
from tests.natlab import SERVER_IPS, STUN_PORT, NatLab, Site
from tests.netns import Process, have_root, lab, wait_for

pytestmark = pytest.mark.system

TYPES = ("full", "addr", "port", "sym")
CLASH = ("clash", "clash")
LOSSY = "lossy"
LOSS_PERCENT = 20
STUN_SERVER = f"{SERVER_IPS[0]}:{STUN_PORT}"
STUN_USERS = {"full2": "full", "addr2": "addr", "port2": "port", "sym2": "sym"}
"""Nodes configured with the lab's STUN server (coturn, RFC 5780), and the NAT type each must report."""
LAN_MATE = "port1b"
"""The second member of site ``port1``, on the same LAN as ``port1``."""
BOOT_IP = SERVER_IPS[0]
FIGURES: dict[str, Any] = {}


TRACE = os.environ.get("IPOP_NAT_TRACE") == "1"
"""For diagnosing: every router's ``conntrack -E`` events (with timestamps) and the nodes' debug logs
go to the lab's directory (the test's tmp dir, printed at the start): ``conntrack-<site>.out`` and
``<label>-1.err``."""

POLL_S = 0.5
"""Status polls start a CLI process each; on two cores, polling faster steals time from the nodes."""

LINK_DEADLINE_S = 100.0
"""For all pairs together: a relayed pair first waits out its punch and direct handshake; a pair whose
first punch met a stale conntrack entry goes direct at the tunnel's first direct retry, 40 s ± 10 % later
(overlay.relay, docs/nat.md). The wait ends as soon as every pair is linked."""


@dataclass
class Grid:
    natlab: NatLab
    boot: VpnNode
    nodes: dict[str, VpnNode]
    """Site label (``full1``, ``sym2``, ``clash1``, ``lossy1``, ...) -> its member node."""
    sites: dict[str, Site]
    addresses: dict[str, str] = field(default_factory=dict)
    """Site label -> the overlay address of its node (hex, as status shows it)."""


def _labels() -> list[tuple[str, str, str]]:
    """(label, NAT type, router input) of every site, in site order."""
    out = [(f"{t}{k}", t, "drop") for t in TYPES for k in (1, 2)]
    out += [("clash1", "port", "accept"), ("clash2", "port", "accept"), ("lossy1", "addr", "drop")]
    return out


def _pairs() -> list[tuple[str, str]]:
    """Every pair of NAT types (the second node from the second site of its type, so same-type pairs
    are two routers), the conntrack-clash pair, and the lossy site with an easy and a hard peer."""
    pairs = [(f"{a}1", f"{b}2") for a, b in combinations_with_replacement(TYPES, 2)]
    return [*pairs, ("clash1", "clash2"), ("lossy1", "port1"), ("lossy1", "sym1")]


PAIRS = _pairs()


def nat_type(label: str) -> str:
    return {"clash": "port", "lossy": "addr"}.get(label[:-1], label[:-1])


def tap_up(node: VpnNode) -> bool:
    if node.process is not None and not node.process.alive():
        raise AssertionError(f"{node.name} exited: {node.process.stderr()[-2000:]}")
    return node.sh("ip", "link", "show", "ipop0", check=False).returncode == 0


def overlay(node: VpnNode) -> dict[str, Any]:
    section: dict[str, Any] = node.status()["overlay"]
    return section


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    if not have_root():
        pytest.fail("system tests need root (CI runs as root); run `sudo make test`")
    with lab(tmp_path_factory.mktemp("natvpn")) as the_lab:
        labels = _labels()
        natlab = NatLab(the_lab, [t for _, t, _ in labels])
        sites = {}
        for (label, nat_type_, router_input), site in zip(labels, natlab.sites, strict=True):
            if router_input != "drop":
                natlab.set_nat(site, nat_type_, router_input)
            sites[label] = site
        natlab.impair(sites["lossy1"], LOSS_PERCENT)
        natlab.start_stun_server()
        log_level = "info"
        print(f"\nthe lab's files (node logs, ping output): {the_lab.workdir}")
        if TRACE:
            log_level = "debug"
            print("IPOP_NAT_TRACE: conntrack events and debug logs there too")
            for label, site in sites.items():
                cmd = ["conntrack", "-E", "-p", "udp", "-o", "timestamp"]
                natlab.start(f"conntrack-{label}", cmd, ns=site.router)
        boot_config = node_config(the_lab, "boot", BOOT_IP, [], log_level=log_level)
        boot = VpnNode(the_lab, "boot", natlab.server, BOOT_IP, boot_config)
        boot.start()
        natlab.add_host(sites["port1"])
        sites[LAN_MATE] = sites["port1"]
        nodes = {}
        for label, site in sites.items():
            k = 1 if label == LAN_MATE else 0
            ip = site.host_ip(k)
            network = {"namespace": "default", "lease_seconds": 120}
            overlay_keys = {"stun_servers": [STUN_SERVER]} if label in STUN_USERS else None
            config = node_config(
                the_lab, label, ip, [BOOT_IP], network=network, overlay=overlay_keys, log_level=log_level
            )
            nodes[label] = VpnNode(the_lab, label, site.hosts[k], ip, config)
        started = time.monotonic()
        wait_for(lambda: boot.status()["node"]["state"] == "running", 20, "the bootstrap node", POLL_S)
        for node in nodes.values():
            node.start()
        # A DHCP client starts as soon as its node's TAP device exists; it retries until the node has
        # joined and answers.
        for k, node in enumerate(nodes.values()):
            wait_for(lambda n=node: tap_up(n), 30, f"{node.name}'s TAP device", POLL_S)
            (node.dhclient if k % 2 else node.udhcpc)(node.name)
        for node in nodes.values():
            node.wait_address(timeout=60)
        FIGURES["start_to_all_leases_s"] = round(time.monotonic() - started, 1)
        grid = Grid(natlab, boot, nodes, sites)
        grid.addresses = {label: overlay(node)["address"] for label, node in nodes.items()}
        yield grid
        times = [t for node in nodes.values() for t in overlay(node)["nat"].get("direct_link_s", [])]
        if times:
            FIGURES["direct_link_s_p50"] = round(statistics.median(times), 3)
            FIGURES["direct_link_s_max"] = round(max(times), 3)
            FIGURES["direct_links_timed"] = len(times)
        print("\nfigures:", json.dumps(FIGURES))


def link_between(grid: Grid, a: str, b: str, status: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``a``'s link to ``b`` as ``a``'s status shows it (``status``: one already read)."""
    status = status if status is not None else overlay(grid.nodes[a])
    peer = grid.addresses[b]
    return next((link for link in status["links"] if link["peer"] == peer), None)


def as_expected(grid: Grid, a: str, b: str, link: dict[str, Any] | None) -> bool:
    """Direct to the public address of ``b``'s router where the lab can punch, over a relay otherwise."""
    if link is None:
        return False
    if pair_is_punchable(nat_type(a), nat_type(b)):
        return str(link["endpoint"]).startswith(f"{grid.sites[b].wan_ip}:")
    return str(link["path"]).startswith("relay:")


@pytest.fixture(scope="module")
def pair_links(grid: Grid) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Every pair at once: pings from ``a`` to ``b`` (enough messages to one destination open a
    shortcut link) while ``a``'s statuses are polled until each pair is linked as expected or the
    deadline passes. Returns ``a``'s link to ``b`` at the end, for each pair's test to judge."""
    bursts: list[Process] = []
    for a, b in PAIRS:
        ip_b = grid.nodes[b].address()
        assert ip_b is not None
        # Pings go on until the pair is linked (or the deadline), as a user would retry: a look-up of
        # the address through a lossy site may fail once, and the kernel gives up on ARP after 3 s.
        cmd = ["ping", "-n", "-q", "-i", "0.05", "-W", "1", "-w", str(int(LINK_DEADLINE_S)), ip_b]
        bursts.append(grid.natlab.lab.start(f"burst-{a}-{b}", cmd, ns=grid.nodes[a].ns))
    started = time.monotonic()
    found: dict[tuple[str, str], dict[str, Any] | None] = {pair: None for pair in PAIRS}
    linked_s: dict[str, float] = {}
    FIGURES["pair_linked_s"] = linked_s  # from the start of the bursts to the status poll that saw it

    def all_linked() -> bool:
        pending = {a for (a, b) in PAIRS if not as_expected(grid, a, b, found[(a, b)])}
        statuses = {a: overlay(grid.nodes[a]) for a in pending}
        for a, b in PAIRS:
            if a in statuses and not as_expected(grid, a, b, found[(a, b)]):
                found[(a, b)] = link_between(grid, a, b, statuses[a])
                if as_expected(grid, a, b, found[(a, b)]):
                    linked_s[f"{a}-{b}"] = round(time.monotonic() - started, 1)
        return all(as_expected(grid, a, b, found[pair]) for pair in PAIRS for a, b in [pair])

    with contextlib.suppress(TimeoutError):  # each pair's test reports its own outcome
        wait_for(all_linked, LINK_DEADLINE_S, "every pair to link as the lab expects", POLL_S)
    FIGURES["all_pairs_linked_s"] = round(time.monotonic() - started, 1)
    for proc in bursts:
        proc.stop()
    return found


def pings(node: VpnNode, target: str, count: int = 10) -> int:
    """Echo replies out of ``count`` quick pings (a lossy site needs several for one to get through)."""
    proc = node.sh("ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1", target, check=False)
    received = [line for line in proc.stdout.splitlines() if "received" in line]
    return int(received[0].split(",")[1].split()[0]) if received else 0


def vpn_state(node: VpnNode, target: str) -> str:
    """For a failure message: the node's TAP addresses and routes, and what one ping to ``target`` says
    (a ping that cannot even start prints only to stderr, e.g. when the TAP lost its address)."""
    addr = node.sh("ip", "-4", "-o", "addr", "show", "dev", "ipop0", check=False)
    route = node.sh("ip", "-4", "route", "show", "dev", "ipop0", check=False)
    probe = node.sh("ping", "-n", "-c", "1", "-W", "1", target, check=False)
    found = (addr.stdout.strip(), route.stdout.strip(), probe.stderr.strip())
    return f"{node.name}: addr {found[0]!r} route {found[1]!r} ping {found[2]!r}"


def _pair_params() -> list[Any]:
    return [pytest.param(a, b, id=f"{a}-{b}") for a, b in PAIRS]


@pytest.mark.parametrize(("a", "b"), _pair_params())
def test_pair_links_direct_where_the_lab_can_and_pings_through_the_vpn(
    grid: Grid, pair_links: dict[tuple[str, str], dict[str, Any] | None], a: str, b: str
) -> None:
    direct = pair_is_punchable(nat_type(a), nat_type(b))
    link = pair_links[(a, b)]
    assert as_expected(grid, a, b, link), (
        f"{a} -> {b}: expected {'direct' if direct else 'relay'}, got {link}"
    )
    assert link is not None
    FIGURES.setdefault("pairs", {})[f"{a}-{b}"] = "direct" if direct else link["path"]
    status_b = overlay(grid.nodes[b])
    back = link_between(grid, b, a, status_b)
    assert back is not None and (back["endpoint"] is not None) == direct, (back, link, status_b)
    node_a, node_b = grid.nodes[a], grid.nodes[b]
    ip_a, ip_b = node_a.address(), node_b.address()
    assert ip_a is not None and ip_b is not None
    if "lossy1" in (a, b):
        # Through 20 % loss each way, the first echo may wait for the retransmitted look-ups of the
        # address (ARP answered from the DHT) on the lossy path: replies must come, within a deadline.
        wait_for(lambda: pings(node_a, ip_b) > 0, 20, f"{a} to get replies from {b} through the loss", POLL_S)
        wait_for(lambda: pings(node_b, ip_a) > 0, 20, f"{b} to get replies from {a} through the loss", POLL_S)
        return
    there, back_again = pings(node_a, ip_b), pings(node_b, ip_a)
    # Over clean links every echo comes back.
    assert (there, back_again) == (10, 10), (
        there,
        back_again,
        vpn_state(node_a, ip_b),
        vpn_state(node_b, ip_a),
    )


def test_members_ping_each_other_by_name(grid: Grid) -> None:
    node = grid.nodes["full1"]
    assert pings(node, "sym2.ipop", count=3) > 0


def test_two_members_behind_one_nat_link_over_their_lan(grid: Grid) -> None:
    a, b = grid.nodes["port1"], grid.nodes[LAN_MATE]
    local = f"{b.underlay_ip}:5800"
    ip_b = b.address()
    assert ip_b is not None
    # Traffic opens a shortcut; its handshake goes to the LAN endpoint the beacons announced.
    a.sh("ping", "-n", "-q", "-c", "40", "-i", "0.05", "-W", "1", ip_b, check=False)

    def over_lan() -> dict[str, Any] | None:
        link = link_between(grid, "port1", LAN_MATE)
        return link if link is not None and link["endpoint"] == local else None

    wait_for(over_lan, 20, "port1 to link to its LAN neighbour at its LAN address", POLL_S)
    back = link_between(grid, LAN_MATE, "port1")
    assert back is not None and back["endpoint"] == f"{a.underlay_ip}:5800", back
    lan = overlay(b)["lan"]
    assert lan["enabled"] and lan["beacons_sent"] >= 1, lan
    assert grid.addresses["port1"] in {p["peer"] for p in lan["peers"]}, lan
    ip_a = a.address()
    assert ip_a is not None and pings(b, ip_a, count=5) == 5


def test_stun_servers_are_asked_and_the_nat_type_is_shown(grid: Grid) -> None:
    def classified() -> dict[str, str] | None:
        seen = {label: overlay(grid.nodes[label])["nat"]["nat_type"] for label in STUN_USERS}
        return seen if seen == STUN_USERS else None

    try:
        wait_for(classified, 20, "every STUN user to show its NAT type", POLL_S)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {[overlay(grid.nodes[lb])['nat'] for lb in STUN_USERS]}") from None
    for label in STUN_USERS:
        status = overlay(grid.nodes[label])
        servers = status["stun"]["servers"]
        assert [s["state"] for s in servers] == ["succeeded"], servers
        assert servers[0]["mapped"].startswith(f"{grid.sites[label].wan_ip}:"), servers
        assert status["counters"].get("stun_answers", 0) >= 1
    without = overlay(grid.nodes["full1"])
    assert without["stun"]["servers"] == [] and without["nat"]["filtering"] == "unknown"
