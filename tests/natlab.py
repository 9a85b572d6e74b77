"""Test support: the NAT lab, a small internet of network namespaces with nftables NAT routers.

The recipe is the one verified in ``shared/reference/natlab.md`` (its ``natlab.sh``), rebuilt on
:class:`tests.netns.Lab` so that every name carries the lab's unique prefix and everything is removed at
the end, also on failure::

    <p>-srv   198.51.100.10 and .11 on eth0 (STUN server, bootstrap node)
       |
    <p>-inet  public core router: 198.51.100.1/24, 203.0.113.(4i-3)/30 towards site i
       |
    <p>-r<i>  NAT router of site i: wan0 203.0.113.(4i-2)/30, bridge lan0 192.168.i.1/24
       |
    <p>-h<i>  hosts of site i: 192.168.i.2, .3, ... (the first is h<i>, the next h<i>b, h<i>c, ...)

NAT types (RFC 4787 terms), applied with nftables in table ``ip ipopnat`` of each router:

* ``port``: plain ``masquerade`` (EIM + APDF), ``sym``: ``masquerade fully-random`` (APDM + APDF),
  ``symr``: ``masquerade random``;
* ``full`` (EIM + EIF) and ``addr`` (EIM + ADF): Linux has no cone NAT, so outbound traffic teaches a map
  WAN port -> LAN endpoint (and, for addr, a set of remote address . WAN port) that prerouting DNATs
  unsolicited packets through.

Hosts of a site hang off a bridge in the router; with ``bridge-nf-call-iptables`` set (as here) their
bridged frames pass the router's forward hook, so the ruleset accepts LAN-to-LAN traffic explicitly.
``router_input`` says what the router's own stack does with unsolicited packets from the WAN: ``drop``
(a typical home router) or ``accept`` (a DIY gateway; reproduces the conntrack clash of the lab).
Random loss on a site's public link uses nft ``numgen random`` in the core (sch_netem is not available
in this kernel).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns import Lab, Process, wait_for

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "natlab"
NAT_TYPES = ("full", "addr", "port", "sym", "symr")
SERVER_IPS = ("198.51.100.10", "198.51.100.11")
STUN_PORT, STUN_ALT_PORT = 3478, 3479
CORE_IP = "198.51.100.1"
MAX_SITES = 60
"""Site i uses 203.0.113.(4i-3)/30 and 192.168.i.0/24; 60 sites stay inside 203.0.113.0/24."""


@dataclass
class Site:
    index: int
    nat_type: str
    router: str
    hosts: list[str] = field(default_factory=list)
    router_input: str = "drop"
    loss: int = 0

    @property
    def wan_ip(self) -> str:
        return f"203.0.113.{4 * self.index - 2}"

    @property
    def core_ip(self) -> str:
        return f"203.0.113.{4 * self.index - 3}"

    @property
    def gateway(self) -> str:
        return f"192.168.{self.index}.1"

    def host_ip(self, k: int = 0) -> str:
        return f"192.168.{self.index}.{k + 2}"


_LEARN_CONE = (
    'oifname "wan0" meta l4proto udp update @fcmap '
    "{ ct reply proto-dst : ct original ip saddr . ct original proto-src }"
)
"""Outbound traffic teaches the cone map: WAN port -> LAN address . port (one nft statement)."""


def nat_ruleset(nat_type: str, router_input: str) -> str:
    """The nftables table of a NAT router of ``nat_type`` (see the module docstring)."""
    if nat_type not in NAT_TYPES:
        raise ValueError(f"unknown NAT type {nat_type!r} (one of {', '.join(NAT_TYPES)})")
    if router_input not in ("drop", "accept"):
        raise ValueError("router_input is 'drop' or 'accept'")
    masq = {"sym": "masquerade fully-random", "symr": "masquerade random"}.get(nat_type, "masquerade")
    inbound = {
        "full": 'iifname "wan0" meta l4proto udp dnat ip addr . port to udp dport map @fcmap',
        "addr": 'iifname "wan0" meta l4proto udp ip saddr . udp dport @seen '
        "dnat ip addr . port to udp dport map @fcmap",
    }.get(nat_type, "")
    return f"""
table ip ipopnat {{
  map fcmap {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 120s; }}
  set seen {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 120s; }}
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    {inbound}
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" {masq}
  }}
  chain learn {{
    type filter hook postrouting priority 200; policy accept;
    {_LEARN_CONE}
    oifname "wan0" meta l4proto udp update @seen {{ ip daddr . ct reply proto-dst }}
  }}
  chain filt_fwd {{
    type filter hook forward priority filter; policy drop;
    iifname "lan0" oifname "lan0" accept
    iifname "lan0" oifname "wan0" accept
    iifname "wan0" oifname "lan0" ct state established,related accept
    iifname "wan0" oifname "lan0" ct status dnat accept
  }}
  chain filt_in {{
    type filter hook input priority filter; policy accept;
    iifname "wan0" ct state established,related accept
    iifname "wan0" icmp type echo-request accept
    iifname "wan0" {router_input}
  }}
}}
"""


class NatLab:
    """A public core, a server namespace and NAT sites, built on a :class:`Lab` (which tears it all
    down). ``sites`` lists one NAT type per site."""

    def __init__(
        self,
        lab: Lab,
        sites: Sequence[str],
        *,
        hosts_per_site: int = 1,
        router_input: str = "drop",
    ) -> None:
        if not 1 <= len(sites) <= MAX_SITES or not 1 <= hosts_per_site <= 20:
            raise ValueError(f"1-{MAX_SITES} sites of 1-20 hosts")
        for tool in ("nft", "conntrack", "turnserver"):
            if shutil.which(tool) is None:
                raise RuntimeError(
                    f"the NAT lab needs {tool!r} (Debian packages nftables, conntrack, coturn)"
                )
        self.lab = lab
        self.core = lab.netns("inet")
        self.server = lab.netns("srv")
        lab.veth(self.server, "eth0", self.core, "srv0")
        for ip in SERVER_IPS:
            lab.addr(self.server, "eth0", f"{ip}/24")
        lab.route(self.server, "default", "via", CORE_IP)
        lab.addr(self.core, "srv0", f"{CORE_IP}/24")
        lab.sysctl(self.core, "net.ipv4.ip_forward", "1")
        self.sites: list[Site] = []
        for i, nat_type in enumerate(sites, start=1):
            self.sites.append(self._build_site(i, nat_type, hosts_per_site, router_input))

    def _build_site(self, i: int, nat_type: str, hosts: int, router_input: str) -> Site:
        lab = self.lab
        site = Site(i, nat_type, lab.netns(f"r{i}"))
        lab.veth(self.core, f"s{i}", site.router, "wan0")
        lab.addr(self.core, f"s{i}", f"{site.core_ip}/30")
        lab.addr(site.router, "wan0", f"{site.wan_ip}/30")
        lab.route(site.router, "default", "via", site.core_ip)
        lab.sysctl(site.router, "net.ipv4.ip_forward", "1")
        lab.bridge(site.router, "lan0")
        lab.addr(site.router, "lan0", f"{site.gateway}/24")
        for _ in range(hosts):
            self.add_host(site)
        self.set_nat(site, nat_type, router_input)
        return site

    def add_host(self, site: Site) -> str:
        """One more host on the site's LAN (192.168.i.k+2, its router as default gateway)."""
        k = len(site.hosts)
        if k >= 20:
            raise ValueError("at most 20 hosts a site")
        lab = self.lab
        host = lab.netns(f"h{site.index}{'' if k == 0 else chr(ord('a') + k)}")
        lab.veth(site.router, f"lp{k}", host, "eth0")
        lab.attach(site.router, f"lp{k}", "lan0")
        lab.addr(host, "eth0", f"{site.host_ip(k)}/24")
        lab.route(host, "default", "via", site.gateway)
        site.hosts.append(host)
        return host

    def site(self, index: int) -> Site:
        return self.sites[index - 1]

    def set_nat(self, site: Site, nat_type: str, router_input: str = "drop") -> None:
        """(Re)configure a site's NAT type; conntrack is flushed so no old flow survives the change."""
        ruleset = nat_ruleset(nat_type, router_input)
        self.lab.sh(site.router, "nft", "delete", "table", "ip", "ipopnat", check=False)
        self.lab.nft(site.router, ruleset)
        self.lab.sh(site.router, "conntrack", "-F", check=False)
        site.nat_type, site.router_input = nat_type, router_input

    def impair(self, site: Site, loss_percent: int) -> None:
        """Drop ``loss_percent`` % of packets at random on the site's public link, each direction."""
        if not 0 <= loss_percent <= 100:
            raise ValueError("loss is a percentage")
        self.unimpair(site)
        link = f"s{site.index}"
        self.lab.nft(
            self.core,
            f"""
table ip impair_{site.index} {{
  chain lossy {{
    type filter hook forward priority -10; policy accept;
    iifname "{link}" numgen random mod 100 < {loss_percent} counter drop
    oifname "{link}" numgen random mod 100 < {loss_percent} counter drop
  }}
}}
""",
        )
        site.loss = loss_percent

    def dropped(self, site: Site) -> int:
        """Packets the loss rules of ``site`` have dropped so far (proves the impairment is real)."""
        out = self.lab.sh(self.core, "nft", "list", "table", "ip", f"impair_{site.index}", check=False).stdout
        return sum(int(m) for m in re.findall(r"counter packets (\d+)", out))

    def unimpair(self, site: Site) -> None:
        self.lab.sh(self.core, "nft", "delete", "table", "ip", f"impair_{site.index}", check=False)
        site.loss = 0

    def conntrack(self, site: Site) -> str:
        """The router's conntrack table (for failure messages)."""
        return self.lab.sh(site.router, "conntrack", "-L", check=False).stdout

    # -- processes ----------------------------------------------------------------------------------

    def start(self, name: str, cmd: Sequence[str], ns: str) -> Process:
        return self.lab.start(name, cmd, ns=ns)

    def python(self, name: str, ns: str, script: str, *args: str) -> Process:
        """Run one of the lab's helper scripts (tests/natlab/) with the project importable."""
        return self.lab.start(
            name,
            [sys.executable, str(SCRIPTS / script), *args],
            ns=ns,
            env={"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        )

    def start_stun_server(self) -> Process:
        """coturn in STUN-only mode on both server addresses and both ports (RFC 5780 capable); returns
        once all four sockets are bound."""
        work = self.lab.workdir
        proc = self.start(
            "turnserver",
            [
                "turnserver",
                "--stun-only",
                "-n",
                "--no-cli",
                "--no-auth",
                "--no-tls",
                "--no-dtls",
                "--no-tcp",
                *[arg for ip in SERVER_IPS for arg in ("--listening-ip", ip)],
                "--listening-port",
                str(STUN_PORT),
                "--alt-listening-port",
                str(STUN_ALT_PORT),
                "--userdb",
                str(work / "turndb"),
                "--pidfile",
                str(work / "turnserver.pid"),
                "--log-file",
                "stdout",
                "--simple-log",
            ],
            self.server,
        )

        def bound() -> bool:
            if not proc.alive():
                raise RuntimeError(f"turnserver exited: {proc.stdout()[-2000:]}")
            out = self.lab.sh(self.server, "ss", "-Hunl", check=False).stdout
            return all(f"{ip}:{port}" in out for ip in SERVER_IPS for port in (STUN_PORT, STUN_ALT_PORT))

        wait_for(bound, 15, "coturn to bind its four STUN sockets")
        return proc


def read_json_lines(proc: Process) -> list[dict[str, object]]:
    """The JSON lines a helper script printed so far."""
    out: list[dict[str, object]] = []
    for raw in proc.stdout().splitlines():
        line = raw.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def finished(proc: Process, timeout: float) -> int:
    """Wait for a helper script to exit (deadline, no sleep); returns its exit status."""
    try:
        return proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{proc.name} still running after {timeout} s: {proc.stderr()[-2000:]}") from None
