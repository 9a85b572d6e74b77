"""Test support for the system tests of issue 5: ipop nodes in network namespaces on a bridged underlay,
started through the real CLI (``python -m ipop up -c FILE``), with real DHCP clients on their TAP
devices.

The underlay is one namespace holding a bridge; every node has its own namespace with ``eth0`` on that
bridge (192.168.77.N/24). Node namespaces are private, so every node's TAP device is ``ipop0`` and its
overlay port the default 5800, without colliding with anything on the host. The machine of a node is
its namespace: its DHCP client writes the address and the resolver it was given, as a distribution's
hook scripts would (``resolv.conf`` inside ``ip netns exec`` is the lab's per-namespace file).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns import Lab, Process, run, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "system-test-secret-0123456789abcdef"
UNDERLAY = "192.168.77"
BOOT_IP = f"{UNDERLAY}.1"
STUB_DNS_PORT = 5353
SERVER = "10.250.0.1"
ENV = {"PYTHONPATH": str(ROOT)}

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew)
        ip addr replace "$ip/$mask" dev "$interface"
        [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
        {{ echo "nameserver $dns"; echo "search ${{search:-$domain}}"; }} > /etc/resolv.conf
        env | grep -E '^(ip|subnet|mask|dns|domain|search|mtu|lease|serverid|hostname)=' \\
            | sort > "{out}.tmp" && mv "{out}.tmp" "{out}" ;;
    deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT)
        ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
        [ -n "$new_interface_mtu" ] && ip link set dev "$interface" mtu "$new_interface_mtu"
        {{ echo "nameserver $new_domain_name_servers"; echo "search $new_domain_search"; }} > /etc/resolv.conf
        env | grep '^new_' | sort > "{out}.tmp" && mv "{out}.tmp" "{out}" ;;
    RELEASE|STOP|EXPIRE|FAIL) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"""

DHCLIENT_CONF = """send host-name "{host}";
request subnet-mask, broadcast-address, domain-name, domain-name-servers, domain-search,
        interface-mtu;
"""


@dataclass
class VpnNode:
    lab: Lab
    name: str
    ns: str
    underlay_ip: str
    config: Path
    process: Process | None = None
    dhcp: Process | None = None
    lease_env: Path | None = None
    runs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.runs += 1
        self.process = self.lab.start(
            f"{self.name}-{self.runs}",
            [sys.executable, "-m", "ipop", "up", "-c", str(self.config)],
            ns=self.ns,
            env=ENV,
        )

    def cli(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ipop", *args, "-c", str(self.config)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**ENV}, cwd=ROOT)

    def status(self) -> dict[str, Any]:
        proc = self.cli("status", "--json")
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip())
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def network(self) -> dict[str, Any]:
        section: dict[str, Any] = self.status()["network"]
        return section

    def wait_running(self, timeout: float = 20.0) -> None:
        def running() -> bool:
            assert self.process is not None
            if not self.process.alive():
                raise AssertionError(f"{self.name} exited: {self.process.stderr()[-2000:]}")
            return self.status()["node"]["state"] == "running"

        wait_for(running, timeout, f"node {self.name} to run")

    def wait_joined(self, timeout: float = 30.0) -> None:
        wait_for(lambda: self.network()["joined"], timeout, f"node {self.name} to join the overlay")

    def sh(self, *cmd: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.lab.sh(self.ns, *cmd, check=check, timeout=timeout)

    def udhcpc(self, host: str, *, once: bool = False, tries: int = 5) -> Process:
        """busybox udhcpc on ipop0 (in the foreground, renewing); ``once``: give up after ``tries``."""
        out = self.lab.workdir / f"{self.name}.udhcpc.env"
        script = self.lab.workdir / f"{self.name}.udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        self.lease_env = out
        cmd = ["udhcpc", "-f", "-i", "ipop0", "-s", str(script), "-x", f"hostname:{host}", "-T", "1"]
        cmd += ["-t", str(tries), "-n"] if once else ["-t", "30"]
        self.dhcp = self.lab.start(f"{self.name}-udhcpc-{self.runs}", cmd, ns=self.ns)
        return self.dhcp

    def dhclient(self, host: str) -> Process:
        """ISC dhclient on ipop0, in the foreground, with its lease file kept across runs."""
        work = self.lab.workdir
        out = work / f"{self.name}.dhclient.env"
        script = work / f"{self.name}.dhclient.sh"
        script.write_text(DHCLIENT_SCRIPT.format(out=out))
        script.chmod(0o755)
        conf = work / f"{self.name}.dhclient.conf"
        conf.write_text(DHCLIENT_CONF.format(host=host))
        self.lease_env = out
        cmd = ["dhclient", "-4", "-d", "-v", "-sf", str(script), "-cf", str(conf)]
        cmd += ["-lf", str(work / f"{self.name}.leases"), "-pf", str(work / f"{self.name}.dhclient.pid")]
        self.dhcp = self.lab.start(f"{self.name}-dhclient-{self.runs}", [*cmd, "ipop0"], ns=self.ns)
        return self.dhcp

    def lease(self) -> dict[str, str]:
        """What the DHCP client's script recorded (empty until bound)."""
        if self.lease_env is None or not self.lease_env.exists():
            return {}
        return dict(line.split("=", 1) for line in self.lease_env.read_text().splitlines() if "=" in line)

    def address(self) -> str | None:
        env = self.lease()
        return env.get("new_ip_address") or env.get("ip")

    def wait_address(self, timeout: float = 30.0) -> str:
        return wait_for(self.address, timeout, f"a DHCP lease on {self.name}")

    def stop(self) -> int:
        assert self.process is not None
        return self.process.stop(timeout=5)


class Cluster:
    """A bootstrap node (with the stub DNS server beside it) and any number of member nodes."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.underlay = lab.netns("ul")
        lab.bridge(self.underlay, "br0")
        self.count = 0
        self.nodes: dict[str, VpnNode] = {}
        self.boot = self.node("boot", network=False, bootstrap=False)
        self.stub = lab.start(
            "stubdns",
            [sys.executable, "-m", "tests.ipop.stubdns", BOOT_IP, str(STUB_DNS_PORT)],
            ns=self.boot.ns,
            env=ENV,
        )
        wait_for(lambda: "ready" in self.stub.stdout() or not self.stub.alive(), 20, "the stub DNS server")

    def node(
        self,
        name: str,
        *,
        network: bool = True,
        bootstrap: bool = True,
        secret: str = SECRET,
        namespace: str = "default",
        lease_seconds: int = 60,
        start: bool = True,
    ) -> VpnNode:
        self.count += 1
        ns = self.lab.netns(name)
        self.lab.veth(ns, "eth0", self.underlay, f"v{self.count}")
        self.lab.attach(self.underlay, f"v{self.count}", "br0")
        ip = f"{UNDERLAY}.{self.count}"
        self.lab.addr(ns, "eth0", f"{ip}/24")
        self.lab.sysctl(ns, "net.ipv4.icmp_echo_ignore_broadcasts", "0")
        config = node_config(
            self.lab,
            name,
            ip,
            [BOOT_IP] if bootstrap else [],
            secret=secret,
            network={"namespace": namespace, "lease_seconds": lease_seconds} if network else None,
            dns_upstream=f"{BOOT_IP}:{STUB_DNS_PORT}",
        )
        node = VpnNode(self.lab, name, ns, ip, config)
        self.nodes[name] = node
        if start:
            node.start()
            node.wait_running()
        return node


def node_config(
    lab: Lab,
    name: str,
    ip: str,
    bootstrap: list[str],
    *,
    secret: str = SECRET,
    network: dict[str, Any] | None = None,
    dns_upstream: str | None = None,
    overlay: dict[str, Any] | None = None,
    log_level: str = "info",
) -> Path:
    """Write the TOML file of node ``name`` listening on ``ip``:5800 and return its path. ``network``
    holds the keys of its ``[network]`` section (``None``: a pure overlay node); ``overlay`` adds keys to
    ``[overlay]`` (lists and strings as TOML, e.g. ``stun_servers``)."""
    config = lab.workdir / f"{name}.toml"
    text = (
        f'[node]\nname = "{name}"\nstate_dir = "{lab.workdir / (name + ".state")}"\n'
        f'listen = "{ip}:5800"\nlog_level = "{log_level}"\n'
        f'[overlay]\nsecret = "{secret}"\n'
        f"bootstrap = {json.dumps([f'udp://{b}:5800' for b in bootstrap])}\n"
    )
    text += "".join(f"{key} = {json.dumps(value)}\n" for key, value in (overlay or {}).items())
    if network is not None:
        text += "[network]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in network.items())
        if dns_upstream is not None:
            text += f'dns_upstream = ["{dns_upstream}"]\n'
    config.write_text(text)
    return config


def ping(node: VpnNode, target: str, count: int = 1, wait: float = 2.0) -> bool:
    proc = node.sh(
        "ping", "-n", "-c", str(count), "-W", str(wait), target, check=False, timeout=count * wait + 10
    )
    return proc.returncode == 0


def dig(node: VpnNode, *args: str) -> subprocess.CompletedProcess[str]:
    return node.sh("dig", f"@{SERVER}", "+tries=1", "+time=2", *args, check=False)


__all__ = ["Cluster", "VpnNode", "dig", "node_config", "ping", "run"]
