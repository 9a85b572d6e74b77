"""Live: real udhcpc, dhclient, dig, arping and ping against vnproto's responders on a real link.

The harness (tests/vnproto/harness.py) serves ARP, DHCP, DNS and ICMP echo with the pure responders
over an AF_PACKET socket in one namespace; the clients run unmodified in another. The clients' scripts
write what they were told to a file and set the address inside their namespace, nothing else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.netns import Lab, Process, wait_for

ROOT = Path(__file__).resolve().parents[2]
ALICE = "10.250.0.77"

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew)
        ip addr replace "$ip/$mask" dev "$interface"
        env | grep -E '^(ip|subnet|mask|router|dns|domain|search|mtu|lease|serverid|broadcast)=' \
            | sort > "{out}.tmp" && mv "{out}.tmp" "{out}" ;;
    deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT)
        ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
        env | grep '^new_' | sort > "{out}.tmp" && mv "{out}.tmp" "{out}" ;;
    RELEASE|STOP|EXPIRE|FAIL) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"""


def events(harness: Process) -> list[dict[str, str]]:
    return [json.loads(line) for line in harness.stdout().splitlines() if line.startswith("{")]


def event(harness: Process, kind: str, **match: str) -> dict[str, str] | None:
    for e in events(harness):
        if e["event"] == kind and all(e.get(k) == v for k, v in match.items()):
            return e
    return None


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture
def link(netlab: Lab) -> tuple[Lab, str, str, Process]:
    srv, cli = netlab.netns("srv"), netlab.netns("cli")
    vs, vc = f"{netlab.prefix}s"[-15:], f"{netlab.prefix}c"[-15:]
    netlab.veth(srv, vs, cli, vc)
    for ns, ifname in ((srv, vs), (cli, vc)):
        netlab.sh(ns, "ethtool", "-K", ifname, "tx", "off")  # complete checksums, as a TAP device gives
        netlab.sysctl(ns, f"net.ipv6.conf.{ifname}.disable_ipv6", "1")
    harness = netlab.start(
        "harness",
        [sys.executable, "-m", "tests.vnproto.harness", vs],
        ns=srv,
        env={"PYTHONPATH": str(ROOT)},
    )
    wait_for(lambda: event(harness, "ready") or not harness.alive(), 20, "the harness to start")
    assert harness.alive(), harness.stderr()
    return netlab, cli, vc, harness


@pytest.mark.system
def test_real_clients_against_the_responders(link: tuple[Lab, str, str, Process], tmp_path: Path) -> None:
    lab, cli, vc, harness = link
    remote_mac = (event(harness, "ready") or {})["mac"]

    # --- udhcpc: a lease with every option the issue names --------------------------------------
    out = tmp_path / "udhcpc.env"
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT.format(out=out))
    script.chmod(0o755)
    command = ["udhcpc", "-f", "-q", "-n", "-i", vc, "-s", str(script), "-x", "hostname:bravo"]
    udhcpc = lab.start("udhcpc", [*command, "-t", "5", "-T", "1"], ns=cli)
    wait_for(lambda: not udhcpc.alive(), 30, "udhcpc to get a lease and quit")
    assert udhcpc.popen.returncode == 0, udhcpc.stderr()
    env = read_env(out)
    assert env["serverid"] == "10.250.0.1" and env["subnet"] == "255.255.0.0" and env["mask"] == "16"
    assert env["dns"].split() == ["10.250.0.1"]
    assert (env["domain"], env["search"], env["mtu"], env["lease"]) == ("ipop", "ipop", "1400", "3600")
    assert env["broadcast"] == "10.250.255.255" and "router" not in env
    bravo = env["ip"]
    assert bravo.startswith("10.250.0.")
    assert wait_for(lambda: event(harness, "HostnameLearned", hostname="bravo", ip=bravo), 10, "host name")

    # --- ping and dig over the address udhcpc configured -------------------------------------------
    lab.sh(cli, "ping", "-c", "1", "-W", "5", "10.250.0.1")

    def dig(*args: str) -> str:
        return lab.sh(cli, "dig", "@10.250.0.1", "+tries=2", "+time=3", *args).stdout

    assert dig("+short", "alice.ipop").split() == [ALICE]
    assert dig("+short", "bravo.ipop").split() == [bravo]  # learned from DHCP option 12
    assert dig("+short", "C250005005.ipop").split() == ["10.250.5.5"]
    assert dig("+short", "-x", "10.250.5.5").split() == ["C250005005.ipop."]
    assert "status: NXDOMAIN" in dig("nobody.ipop")
    aaaa = dig("alice.ipop", "AAAA")
    assert "status: NOERROR" in aaaa and "ANSWER: 0" in aaaa
    assert dig("+short", "+noedns", "alice.ipop").split() == [ALICE]

    # --- arping: answered for a mapped member, silent otherwise -----------------------------------
    answered = lab.sh(cli, "arping", "-c", "1", "-w", "5", "-i", vc, ALICE, check=False)
    assert answered.returncode == 0 and remote_mac in answered.stdout.lower(), answered.stdout
    unmapped = lab.sh(cli, "arping", "-c", "1", "-w", "1", "-i", vc, "10.250.9.9", check=False)
    assert unmapped.returncode != 0 and remote_mac not in unmapped.stdout.lower()
    probe = lab.sh(cli, "arping", "-c", "1", "-w", "1", "-0", "-i", vc, ALICE, check=False)
    assert probe.returncode != 0, "a probe was answered on another's behalf"
    assert wait_for(lambda: event(harness, "ProbeSeen", ip=ALICE), 10, "the probe to be reported")
    lab.sh(cli, "arping", "-c", "1", "-w", "1", "-U", "-i", vc, "-S", bravo, bravo, check=False)
    assert wait_for(lambda: event(harness, "GratuitousArp", ip=bravo), 10, "the announcement event")

    # --- dhclient: same machine, same address; then a RELEASE -------------------------------------
    lab.ip(cli, "-4", "addr", "flush", "dev", vc)
    out = tmp_path / "dhclient.env"
    script = tmp_path / "dhclient.sh"
    script.write_text(DHCLIENT_SCRIPT.format(out=out))
    script.chmod(0o755)
    conf = tmp_path / "dhclient.conf"
    conf.write_text(
        'send host-name "alpha";\nrequest subnet-mask, broadcast-address, routers, domain-name,\n'
        "    domain-name-servers, domain-search, host-name, interface-mtu;\n"
    )
    dhclient = ["dhclient", "-4", "-v", "-cf", str(conf), "-sf", str(script)]
    dhclient += ["-lf", str(tmp_path / "dhclient.leases"), "-pf", str(tmp_path / "dhclient.pid")]
    lab.sh(cli, *dhclient, "-1", vc, timeout=60)
    env = read_env(out)
    assert env["new_ip_address"] == bravo, "the lease key is the MAC for both clients"
    assert env["new_subnet_mask"] == "255.255.0.0" and env["new_domain_name_servers"] == "10.250.0.1"
    assert env["new_domain_name"] == "ipop" and env["new_domain_search"] == "ipop."
    assert env["new_interface_mtu"] == "1400" and "new_routers" not in env
    assert wait_for(lambda: event(harness, "HostnameLearned", hostname="alpha"), 10, "the new host name")
    assert dig("+short", "alpha.ipop").split() == [bravo]
    lab.sh(cli, *dhclient, "-r", vc, timeout=60)
    assert wait_for(lambda: event(harness, "ReleaseAddress", ip=bravo), 10, "the release")
    assert harness.alive(), harness.stderr()
    assert "Traceback" not in harness.stderr()
