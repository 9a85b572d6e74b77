"""System tests of issue 6: real ``ipop up`` nodes behind the NAT lab's nftables routers.

One lab for the module (starting nodes costs seconds; every test reads what it needs from it): a public
bootstrap node (a pure overlay node) on the lab's server namespace, and one site per router below, each
with a member node in interface mode whose TAP gets its address from a real DHCP client:

    full full addr addr port port sym sym       one router of each NAT type, two of each for same-type pairs
    port port (router_input="accept")           the conntrack-clash pair
    addr (20 % random loss on its public link)  links still form through loss

All nodes start at once; then, for every pair of NAT types, one node pings the other through the VPN. The
traffic opens a shortcut link (connect-to-me over the overlay, hole punching both ends), and the test
checks through ``ipop status --json`` that the pair is linked directly (an underlay endpoint: the peer's
router's public address) where ``nat.pair_is_punchable`` says the lab can, over a relay otherwise, and
that pings go through both ways. The time from the punch's start (the requester has the peer's answer,
so both sides know each other) to the direct link's handshake is read from each node's status.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations_with_replacement
from typing import Any

import pytest

from nat import pair_is_punchable
from tests.ipop.vpnlab import VpnNode, node_config, ping
from tests.natlab import SERVER_IPS, NatLab, Site
from tests.netns import have_root, lab, wait_for

pytestmark = pytest.mark.system

TYPES = ("full", "addr", "port", "sym")
CLASH = ("clash", "clash")
LOSSY = "lossy"
LOSS_PERCENT = 20
BOOT_IP = SERVER_IPS[0]
FIGURES: dict[str, Any] = {}


@dataclass
class Grid:
    natlab: NatLab
    boot: VpnNode
    nodes: dict[str, VpnNode]
    """Site label (``full1``, ``sym2``, ``clash1``, ``lossy1``, ...) -> its member node."""
    sites: dict[str, Site]


def _labels() -> list[tuple[str, str, str]]:
    """(label, NAT type, router input) of every site, in site order."""
    out = [(f"{t}{k}", t, "drop") for t in TYPES for k in (1, 2)]
    out += [("clash1", "port", "accept"), ("clash2", "port", "accept"), ("lossy1", "addr", "drop")]
    return out


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    if not have_root():
        pytest.fail("system tests need root (CI runs as root); run `sudo make test`")
    with lab(tmp_path_factory.mktemp("natvpn")) as the_lab:
        labels = _labels()
        natlab = NatLab(the_lab, [t for _, t, _ in labels])
        sites = {}
        for (label, nat_type, router_input), site in zip(labels, natlab.sites, strict=True):
            if router_input != "drop":
                natlab.set_nat(site, nat_type, router_input)
            sites[label] = site
        natlab.impair(sites["lossy1"], LOSS_PERCENT)
        boot = VpnNode(the_lab, "boot", natlab.server, BOOT_IP, node_config(the_lab, "boot", BOOT_IP, []))
        boot.start()
        nodes = {}
        for label, site in sites.items():
            ip = site.host_ip()
            config = node_config(
                the_lab, label, ip, [BOOT_IP], network={"namespace": "default", "lease_seconds": 120}
            )
            nodes[label] = VpnNode(the_lab, label, site.hosts[0], ip, config)
        boot.wait_running()
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_running(timeout=30)
        for node in nodes.values():
            node.wait_joined(timeout=60)
        for k, node in enumerate(nodes.values()):
            (node.dhclient if k % 2 else node.udhcpc)(node.name)
        for node in nodes.values():
            node.wait_address(timeout=60)
        yield Grid(natlab, boot, nodes, sites)
        times = [t for node in nodes.values() for t in overlay(node)["nat"].get("direct_link_s", [])]
        if times:
            FIGURES["direct_link_s_p50"] = round(statistics.median(times), 3)
            FIGURES["direct_link_s_max"] = round(max(times), 3)
            FIGURES["direct_links_timed"] = len(times)
        print("\nfigures:", json.dumps(FIGURES))


def overlay(node: VpnNode) -> dict[str, Any]:
    section: dict[str, Any] = node.status()["overlay"]
    return section


def link_between(a: VpnNode, b: VpnNode) -> dict[str, Any] | None:
    peer = overlay(b)["address"]
    return next((link for link in overlay(a)["links"] if link["peer"] == peer), None)


def _pairs() -> list[tuple[str, str]]:
    """Every pair of NAT types (the second node from the second site of its type, so same-type pairs
    are two routers), the conntrack-clash pair, and the lossy site with an easy and a hard peer."""
    pairs = [(f"{a}1", f"{b}2") for a, b in combinations_with_replacement(TYPES, 2)]
    return [*pairs, ("clash1", "clash2"), ("lossy1", "port1"), ("lossy1", "sym1")]


def nat_type(label: str) -> str:
    return {"clash": "port", "lossy": "addr"}.get(label[:-1], label[:-1])


@pytest.mark.parametrize(("a", "b"), _pairs(), ids=lambda label: label)
def test_pair_links_direct_where_the_lab_can_and_pings_through_the_vpn(grid: Grid, a: str, b: str) -> None:
    node_a, node_b = grid.nodes[a], grid.nodes[b]
    ip_a, ip_b = node_a.address(), node_b.address()
    assert ip_a is not None and ip_b is not None
    wait_for(lambda: ping(node_a, ip_b), 30, f"{a} to reach {b} through the VPN")
    # A burst of traffic: enough messages to one destination open a shortcut link to it.
    node_a.sh("ping", "-n", "-q", "-c", "30", "-i", "0.02", "-W", "1", ip_b, check=False)
    direct = pair_is_punchable(nat_type(a), nat_type(b))
    site_b = grid.sites[b]

    def linked() -> dict[str, Any] | None:
        link = link_between(node_a, node_b)
        if link is None:
            return None
        if direct and link["endpoint"] != f"{site_b.wan_ip}:{_port(link)}":
            return None
        if not direct and not link["path"].startswith("relay:"):
            return None
        return link

    try:
        link = wait_for(linked, 20, f"{a} and {b} to link {'directly' if direct else 'over a relay'}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {a} sees {link_between(node_a, node_b)}") from None
    FIGURES.setdefault("pairs", {})[f"{a}x{b}"] = link["path"] if not direct else "direct"
    assert ping(node_a, ip_b, count=3, wait=1) and ping(node_b, ip_a, count=3, wait=1)
    back = link_between(node_b, node_a)
    assert back is not None and (back["endpoint"] is not None) == direct, back


def _port(link: dict[str, Any]) -> str:
    endpoint = link["endpoint"] or ":"
    return str(endpoint).rsplit(":", 1)[1]
