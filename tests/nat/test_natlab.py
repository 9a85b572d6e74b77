"""System tests in the NAT lab: real nftables NAT routers in network namespaces, a real STUN server
(coturn), and the project's STUN client, classification and punch session over real sockets.

* STUN interop: the project's client against coturn, from a public namespace.
* Classification: for each NAT type, a probe behind the router shows the expected mapping and filtering.
* Punching: for every pair of NAT types the punch goes direct exactly where the lab table says it can
  (``nat.pair_is_punchable``) and fails (the overlay relays) for port x sym and sym x sym.
* The conntrack clash of routers that accept unsolicited input: direct thanks to the low-TTL pre-punch
  (and the hold of the side that starts first); without them the same setting deadlocks.
* 20 % random loss on a site's public link: the punch still goes direct.
* The lab itself: several hosts behind one router, LAN discovery beacons over real broadcast, teardown.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import time
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path

import pytest

from nat import (
    FilteringBehaviour,
    FilterProbeKind,
    FilterProbeResult,
    MappingBehaviour,
    Observation,
    classify_filtering,
    classify_mapping,
    pair_is_punchable,
)
from tests.gate import make_gate, open_gate
from tests.natlab import NAT_TYPES, SERVER_IPS, STUN_PORT, NatLab, Site, finished, read_json_lines
from tests.netns import Lab, Process, lab, wait_for

pytestmark = pytest.mark.system

SERVER = f"{SERVER_IPS[0]}:{STUN_PORT}"


def probe(natlab: NatLab, name: str, ns: str, port: int) -> Process:
    return natlab.python(
        name,
        ns,
        "nat_probe.py",
        "--server1",
        SERVER_IPS[0],
        "--server2",
        SERVER_IPS[1],
        "--local-port",
        str(port),
    )


def probe_result(proc: Process) -> dict[str, list[list[object]]]:
    assert finished(proc, 30) == 0, proc.stderr()
    lines = read_json_lines(proc)
    assert lines, proc.stderr()
    return lines[-1]


def classify(
    result: dict[str, list[list[object]]], local: tuple[str, int]
) -> tuple[MappingBehaviour, FilteringBehaviour]:
    observations = [
        Observation((str(o[0]), int(o[1])), (str(o[2]), int(o[3])), float(i))
        for i, o in enumerate(result["observations"])
    ]
    filtering = [FilterProbeResult(FilterProbeKind(str(k)), bool(ok)) for k, ok in result["filtering"]]
    return classify_mapping(observations, [local]), classify_filtering(filtering)


def test_stun_client_interoperates_with_coturn_from_a_public_host(netlab: Lab) -> None:
    natlab = NatLab(netlab, ["port"])
    natlab.start_stun_server()
    result = probe_result(probe(natlab, "probe-core", natlab.core, 41000))
    observations = result["observations"]
    assert len(observations) == 4  # all four server endpoints answered our requests
    assert {(o[0], o[1]) for o in observations} == {(ip, p) for ip in SERVER_IPS for p in (3478, 3479)}
    assert {(o[2], o[3]) for o in observations} == {("198.51.100.1", 41000)}
    mapping, filtering = classify(result, ("198.51.100.1", 41000))
    assert mapping is MappingBehaviour.NONE
    assert filtering is FilteringBehaviour.ENDPOINT_INDEPENDENT  # no NAT, no firewall


EXPECTED = {
    "full": (MappingBehaviour.ENDPOINT_INDEPENDENT, FilteringBehaviour.ENDPOINT_INDEPENDENT),
    "addr": (MappingBehaviour.ENDPOINT_INDEPENDENT, FilteringBehaviour.ADDRESS_DEPENDENT),
    "port": (MappingBehaviour.ENDPOINT_INDEPENDENT, FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT),
    "sym": (MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT, FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT),
    "symr": (MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT, FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT),
}


def test_each_nat_type_is_classified_through_the_real_router(netlab: Lab) -> None:
    natlab = NatLab(netlab, list(NAT_TYPES))
    natlab.start_stun_server()
    procs = {
        site.nat_type: (site, probe(natlab, f"probe-{site.nat_type}", site.hosts[0], 40000))
        for site in natlab.sites
    }
    seen = {}
    for nat_type, (site, proc) in procs.items():
        result = probe_result(proc)
        assert len(result["observations"]) == 4, (nat_type, result)
        mapping, filtering = classify(result, (site.host_ip(), 40000))
        seen[nat_type] = (mapping, filtering)
        refl_ports = {o[3] for o in result["observations"]}
        if mapping is MappingBehaviour.ENDPOINT_INDEPENDENT:
            assert refl_ports == {40000}, nat_type  # Linux preserves the source port when it can
        assert {o[2] for o in result["observations"]} == {site.wan_ip}
    assert seen == EXPECTED


# -- punching ------------------------------------------------------------------------------------------


@dataclass
class PunchSpec:
    site_a: Site
    site_b: Site
    port: int
    skew: float = 0.0
    """B starts this much before A (B learned of the attempt first)."""
    hold_b: float = 0.0
    prepunch_ttl: int = 2


@dataclass
class PunchOutcome:
    spec: PunchSpec
    a: dict[str, object]
    b: dict[str, object]

    @property
    def direct(self) -> bool:
        return self.a.get("result") == "direct" and self.b.get("result") == "direct"

    @property
    def failed(self) -> bool:
        return self.a.get("result") == "failed" and self.b.get("result") == "failed"

    def __str__(self) -> str:
        a, b = self.spec.site_a, self.spec.site_b
        return f"{a.nat_type}(r{a.index}) x {b.nat_type}(r{b.index}): A={self.a} B={self.b}"


def run_punches(natlab: NatLab, specs: list[PunchSpec], timeout_s: float = 3.0) -> list[PunchOutcome]:
    """Start both peers of every spec, exchange their candidates (host and reflexive, as the overlay's
    handshake would), release them at one chosen instant, and collect the results."""
    rng = random.Random()
    key = rng.randbytes(32).hex()
    peers: list[tuple[Process, Process]] = []
    for n, spec in enumerate(specs):
        pair = []
        for side, site in (("a", spec.site_a), ("b", spec.site_b)):
            pair.append(
                natlab.python(
                    f"punch{n}{side}",
                    site.hosts[0],
                    "punch_peer.py",
                    "--name", f"{n}{side}",
                    "--port", str(spec.port),
                    "--host-ip", site.host_ip(),
                    "--server", SERVER,
                    "--key", key,
                    "--token", str(1000 + n),
                    "--go", str(make_gate(natlab.lab.workdir / f"go{n}{side}")),
                    "--timeout", str(timeout_s),
                )
            )  # fmt: skip
        peers.append((pair[0], pair[1]))

    def reflexive(proc: Process) -> dict[str, object] | None:
        if not proc.alive() and not read_json_lines(proc):
            raise RuntimeError(f"{proc.name} died: {proc.stderr()[-2000:]}")
        return next((line for line in read_json_lines(proc) if line.get("event") == "reflexive"), None)

    candidates = [
        (
            wait_for(lambda p=pa: reflexive(p), 30, f"{pa.name} reflexive"),
            wait_for(lambda p=pb: reflexive(p), 30, f"{pb.name} reflexive"),
        )
        for pa, pb in peers
    ]
    start = time.monotonic() + 0.5
    for n, (spec, (ca, cb)) in enumerate(zip(specs, candidates, strict=True)):
        for side, theirs, at, hold in (("a", cb, start + spec.skew, 0.0), ("b", ca, start, spec.hold_b)):
            go = {
                "remote": [theirs["host"], theirs["reflexive"]],
                "start_at": at,
                "hold": hold,
                "prepunch_ttl": spec.prepunch_ttl,
            }
            open_gate(natlab.lab.workdir / f"go{n}{side}", json.dumps(go).encode())
    outcomes = []
    for spec, (pa, pb) in zip(specs, peers, strict=True):
        results = []
        for proc in (pa, pb):
            assert finished(proc, 30) == 0, proc.stderr()
            results.append(next(line for line in read_json_lines(proc) if line.get("event") == "result"))
        outcomes.append(PunchOutcome(spec, results[0], results[1]))
    return outcomes


def test_punch_matrix_of_all_nat_types(netlab: Lab) -> None:
    # Two sites per type, so that same-type pairs punch between two different routers.
    natlab = NatLab(netlab, [t for t in NAT_TYPES for _ in range(2)])
    natlab.start_stun_server()
    by_type = {t: [s for s in natlab.sites if s.nat_type == t] for t in NAT_TYPES}
    specs = [
        PunchSpec(by_type[ta][0], by_type[tb][1], 20000 + 10 * n)
        for n, (ta, tb) in enumerate(combinations_with_replacement(NAT_TYPES, 2))
    ]
    outcomes = run_punches(natlab, specs)
    wrong = [
        str(o)
        for o in outcomes
        if o.direct != pair_is_punchable(o.spec.site_a.nat_type, o.spec.site_b.nat_type)
    ]
    assert not wrong, "\n".join(wrong)
    for o in outcomes:
        if not o.direct:
            assert o.failed, str(o)  # both sides give up, the overlay relays
    times = [float(o.a["elapsed"]) for o in outcomes if o.direct] + [
        float(o.b["elapsed"]) for o in outcomes if o.direct
    ]
    assert statistics.median(times) < 1.0
    print(f"direct punch times (s): p50 {statistics.median(times):.3f} max {max(times):.3f}")


def test_conntrack_clash_goes_direct_thanks_to_the_prepunch(netlab: Lab) -> None:
    # Routers whose own stack accepts unsolicited input. Each side probes the peer's host candidate
    # first and its reflexive endpoint one Ta (50 ms) later, so when B starts 25 ms before A, B's probe
    # to A's reflexive endpoint reaches A's router 25 ms before A's own first packet towards B.
    natlab = NatLab(netlab, ["port", "port"], router_input="accept")
    natlab.start_stun_server()
    a, b = natlab.site(1), natlab.site(2)
    outcomes = run_punches(
        natlab,
        [
            # A's low-TTL pre-punch to every candidate at its start opens A's mapping in time: direct.
            PunchSpec(a, b, 21000, skew=0.025),
            # Negative control, without the pre-punch: B's probe leaves a confirmed conntrack entry on
            # A's router, A's flow is re-mapped to another port, and the punch deadlocks.
            PunchSpec(a, b, 21010, skew=0.025, prepunch_ttl=0),
            # B learns of the attempt 100 ms before A (the overlay's signalling reached it first): B
            # holds its full probes for 150 ms, its own pre-punch goes at once: direct.
            PunchSpec(a, b, 21020, skew=0.1, hold_b=0.15),
        ],
    )
    assert outcomes[0].direct, str(outcomes[0])
    assert outcomes[1].failed, str(outcomes[1]) + natlab.conntrack(a)
    assert outcomes[2].direct, str(outcomes[2])


def test_punch_survives_twenty_percent_loss(netlab: Lab) -> None:
    natlab = NatLab(netlab, ["port", "port", "addr", "sym"])
    natlab.start_stun_server()
    natlab.impair(natlab.site(1), 20)
    natlab.impair(natlab.site(3), 20)
    specs = [PunchSpec(natlab.site(1), natlab.site(2), 22000 + 10 * i) for i in range(3)]
    specs += [PunchSpec(natlab.site(3), natlab.site(4), 22100 + 10 * i) for i in range(2)]
    outcomes = run_punches(natlab, specs)
    for o in outcomes:
        assert o.direct, str(o)
    # A few punches may cross a site's link in a dozen packets, all of which may survive 20 % loss; a
    # burst of 50 echoes through each impaired link proves the impairment is real (0.8^100 that none
    # of its requests and replies is dropped).
    for site in (natlab.site(1), natlab.site(3)):
        netlab.sh(site.hosts[0], "ping", "-q", "-c50", "-i0.01", "-w5", SERVER_IPS[0], check=False)
        assert natlab.dropped(site) > 0, f"no packet dropped on the link of site {site.index}"
    print("lossy punch times (s):", sorted(float(o.a["elapsed"]) for o in outcomes))


def test_lab_with_several_hosts_per_site_finds_lan_peers_and_tears_down(tmp_path: Path) -> None:
    key = random.Random().randbytes(32).hex()
    with lab(tmp_path) as the_lab:
        natlab = NatLab(the_lab, ["port"], hosts_per_site=3)
        site = natlab.site(1)
        assert len(site.hosts) == 3
        # Every host reaches the public server through the one NAT router.
        for k, host in enumerate(site.hosts):
            ping = the_lab.sh(host, "ping", "-c1", "-W2", SERVER_IPS[0], check=False)
            assert ping.returncode == 0, (k, ping.stdout)
        # A node with another realm's key and ours beacon on the LAN; the listener hears only ours.
        listener = natlab.python("lan-listen", site.hosts[1], "beacon.py", "listen", "--address", "11" * 20,
                                 "--port", "41999", "--key", key)  # fmt: skip
        wait_for(
            lambda: "0.0.0.0:41999" in the_lab.sh(site.hosts[1], "ss", "-Hunl").stdout, 10, "listener bound"
        )
        natlab.python("lan-stranger", site.hosts[2], "beacon.py", "send", "--address", "33" * 20,
                      "--port", "41999", "--key", "00" * 32)  # fmt: skip
        wait_for(
            lambda: any("rejected" in x for x in read_json_lines(listener)), 10, "stranger's beacon rejected"
        )
        natlab.python("lan-send", site.hosts[0], "beacon.py", "send", "--address", "22" * 20,
                      "--port", "41999", "--key", key)  # fmt: skip
        assert finished(listener, 30) == 0, listener.stdout()
        heard = read_json_lines(listener)[-1]
        assert (
            heard["rejected"] >= 1
            and heard["address"] == "22" * 20
            and heard["endpoint"] == [site.host_ip(0), 41999]
        )
        names = list(the_lab.namespaces)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed.split() for n in names)
