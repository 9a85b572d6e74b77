"""I/O. ``make demo`` (``python -m ipop.demo``): a small virtual private network on this machine.

It builds an underlay of Linux network namespaces (a bridge and one namespace per node), starts a
bootstrap node and three member nodes with ``ipop up``, runs busybox ``udhcpc`` on each member's TAP
device (so each member's "machine" gets its address by DHCP from its own node), pings every member by
name from every other, and prints a table: name, overlay address, virtual IP, round-trip time. Then it
removes everything it made — also on Ctrl-C or SIGTERM. ``--hold`` keeps the network up until Ctrl-C,
to explore it (``ip netns exec NS ping bob.ipop``, ``python -m ipop status -c FILE``).

Needs root (namespaces and TAP devices), iproute2 and busybox udhcpc (``make demo`` installs them).
Every name it creates starts with ``ipd<pid>`` and is removed by that name; processes are ended by the
process ids it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
UNDERLAY = "192.168.213"
SECRET = "demo-secret-not-for-real-use-0123456789"
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank")
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew)
        ip addr replace "$ip/$mask" dev "$interface"
        {{ echo "nameserver $dns"; echo "search ${{search:-$domain}}"; }} > /etc/resolv.conf
        echo "$ip" > "{out}" ;;
    deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"""
START_TIMEOUT_S = 30.0
"""Starting a node, joining the overlay and getting a lease take a second or two each; 30 s is for a
machine busy with something else."""


class DemoError(Exception):
    pass


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


class Demo:
    def __init__(self, members: int, workdir: Path) -> None:
        self.prefix = f"ipd{os.getpid() % 100000}"
        self.workdir = workdir
        self.members = list(NAMES[:members])
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.configs: dict[str, Path] = {}
        self.addresses: dict[str, str] = {}

    # -- the underlay -----------------------------------------------------------------------------

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def netns(self, name: str) -> str:
        ns = self.ns(name)
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("# written by ipop.demo\n")
        _run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def build(self) -> None:
        underlay = self.netns("ul")
        _run("ip", "-n", underlay, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", underlay, "link", "set", "br0", "up")
        for i, name in enumerate(["boot", *self.members], start=1):
            ns = self.netns(name)
            _run(
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                f"v{i}",
                "netns",
                underlay,
            )
            _run("ip", "-n", underlay, "link", "set", f"v{i}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{UNDERLAY}.{i}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            self.configs[name] = self._config(name, i)
        print(f"underlay: bridge in {underlay}, nodes at {UNDERLAY}.1-{len(self.members) + 1}")

    def _config(self, name: str, i: int) -> Path:
        path = self.workdir / f"{name}.toml"
        boot = name == "boot"
        text = (
            f'[node]\nname = "{name}"\nstate_dir = "{self.workdir / name}"\nlisten = "{UNDERLAY}.{i}:5800"\n'
            f'[overlay]\nsecret = "{SECRET}"\n'
            f"bootstrap = {'[]' if boot else json.dumps([f'udp://{UNDERLAY}.1:5800'])}\n"
        )
        if not boot:
            text += "[network]\nlease_seconds = 300\n"
        path.write_text(text)
        return path

    # -- nodes and clients ------------------------------------------------------------------------

    def start(self, name: str, cmd: Sequence[str], log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(name), *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def start_nodes(self) -> None:
        for name in ["boot", *self.members]:
            self.start(
                name, [sys.executable, "-m", "ipop", "up", "-c", str(self.configs[name])], f"{name}.log"
            )
        for name in ["boot", *self.members]:
            _wait(lambda n=name: self.status(n).get("node", {}).get("state") == "running", f"{name} to start")
        for name in self.members:
            _wait(lambda n=name: self.status(n).get("network", {}).get("joined"), f"{name} to join")
        print(f"nodes running: boot, {', '.join(self.members)}")

    def status(self, name: str) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "ipop", "status", "--json", "-c", str(self.configs[name])],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if proc.returncode != 0:
            return {}
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def dhcp(self) -> None:
        started = time.monotonic()
        for name in self.members:
            out = self.workdir / f"{name}.ip"
            script = self.workdir / f"{name}.udhcpc.sh"
            script.write_text(UDHCPC_SCRIPT.format(out=out))
            script.chmod(0o755)
            cmd = ["udhcpc", "-f", "-i", "ipop0", "-s", str(script), "-x", f"hostname:{name}-pc", "-T", "1"]
            self.start(name, cmd, f"{name}.udhcpc.log")
        for name in self.members:
            out = self.workdir / f"{name}.ip"
            _wait(out.exists, f"a DHCP lease for {name}")
            self.addresses[name] = out.read_text().strip()
        took = time.monotonic() - started
        leases = ", ".join(f"{n} {ip}" for n, ip in self.addresses.items())
        print(f"DHCP: every machine bound in {took:.2f} s: {leases}")

    def ping(self, source: str, target: str) -> float | None:
        """Average RTT in ms of a few pings by name, or None."""
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns(source),
                "ping",
                "-n",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                f"{target}.ipop",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        found = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
        return float(found.group(1)) if proc.returncode == 0 and found else None

    def table(self) -> bool:
        rows = []
        ok = True
        for target in self.members:
            rtts = []
            for source in self.members:
                if source != target:
                    rtt = _retry(lambda s=source, t=target: self.ping(s, t))
                    ok &= rtt is not None
                    rtts.append(rtt)
            node = self.status(target).get("node", {})
            reached = [r for r in rtts if r is not None]
            rows.append(
                {
                    "name": f"{target}.ipop",
                    "overlay address": node.get("address", "?")[:16] + "...",
                    "virtual ip": self.addresses[target],
                    "rtt ms (from others)": f"{sum(reached) / len(reached):.2f}"
                    if reached
                    else "unreachable",
                    "reached by": f"{len(reached)}/{len(rtts)}",
                }
            )
        columns = list(rows[0])
        widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
        print()
        print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in rows:
            print("  ".join(row[c].ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        print()
        return ok

    def show_status(self, name: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "ipop", "status", "-c", str(self.configs[name])],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        print(f"$ ipop status -c {self.configs[name]}\n{proc.stdout}")

    # -- cleanup ----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        self.namespaces.clear()
        print("removed every namespace and process of the demo")


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise DemoError(f"{' '.join(cmd)}: {proc.stderr.strip()}")


def _wait(condition: Any, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _retry(probe: Any, attempts: int = 5) -> Any:
    """The first lookups of a name and a mapping take a DHT round trip: a failed ping is tried again."""
    for _ in range(attempts):
        result = probe()
        if result is not None:
            return result
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipop.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=3, choices=range(2, len(NAMES) + 1), metavar="N")
    parser.add_argument("--hold", action="store_true", help="keep the network up until Ctrl-C")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "ipop demo: needs root (network namespaces and TAP devices); try sudo make demo", file=sys.stderr
        )
        return 1
    for tool in ("ip", "udhcpc", "ping"):
        if shutil.which(tool) is None:
            print(f"ipop demo: {tool} is not installed (make demo installs it)", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="ipop-demo-"))
    demo = Demo(args.members, workdir)
    ok = False
    try:
        demo.build()
        demo.start_nodes()
        demo.dhcp()
        ok = demo.table()
        demo.show_status(demo.members[0])
        if args.hold:
            print(f"the network is up (configs and logs in {workdir}); Ctrl-C ends it")
            signal.pause()
    except KeyboardInterrupt:
        print("\ninterrupted")
    except DemoError as exc:
        print(f"ipop demo: {exc} (logs in {workdir})", file=sys.stderr)
    finally:
        demo.cleanup()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
