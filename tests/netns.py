"""Test support for system tests: network namespaces, veth pairs, bridges and processes that are always
cleaned up, and waiting for conditions with deadlines instead of sleeping.

Every name made here carries a per-lab prefix derived from the process id and a counter, so two test
runs (or two tests) on one machine never collide, and teardown removes exactly what this lab made.
Processes are ended by the process id that this lab recorded when it started them, never by name.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_counter = itertools.count()


def have_root() -> bool:
    return os.geteuid() == 0


def wait_for(
    condition: Callable[[], T | bool | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail after ``timeout``
    seconds with a message naming ``what``. Polling a condition with a deadline is not a fixed sleep:
    the test proceeds the moment the condition holds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result  # type: ignore[return-value]
        except Exception as exc:  # the condition may probe something not up yet
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}{detail}")
        time.sleep(interval)


def run(cmd: Sequence[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class Process:
    """A process this lab started, with its output captured to files in the lab's directory."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        self.signal(signal.SIGTERM)
        return self.reap(timeout)

    def reap(self, timeout: float) -> int:
        """Wait ``timeout`` for a process that was asked to stop, then SIGKILL it; the exit status."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        return self.popen.returncode


@dataclass
class Lab:
    """A set of namespaces, links and processes created for one test, torn down together."""

    workdir: Path
    prefix: str = field(default_factory=lambda: f"t{os.getpid() % 100000}x{next(_counter)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    netns_etc: list[Path] = field(default_factory=list)

    # -- namespaces and links ----------------------------------------------------------------------

    def netns(self, short: str) -> str:
        """Create namespace ``<prefix>-<short>`` with loopback up and its own resolv.conf (so a DHCP
        client inside never rewrites the host's /etc/resolv.conf)."""
        name = f"{self.prefix}-{short}"
        etc = Path("/etc/netns") / name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("# written by the ipop test lab\n")
        self.netns_etc.append(etc)
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        return name

    def ip(self, ns: str, *args: str) -> str:
        return run(["ip", "-n", ns, *args]).stdout

    def sh(
        self, ns: str, *cmd: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout)

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int = 1500) -> None:
        """A veth pair created directly inside the two namespaces: the host namespace never sees it,
        and deleting either namespace removes it."""
        run(
            [
                "ip",
                "link",
                "add",
                if_a,
                "netns",
                ns_a,
                "mtu",
                str(mtu),
                "type",
                "veth",
                "peer",
                "name",
                if_b,
                "netns",
                ns_b,
                "mtu",
                str(mtu),
            ]
        )
        self.ip(ns_a, "link", "set", if_a, "up")
        self.ip(ns_b, "link", "set", if_b, "up")

    def bridge(self, ns: str, name: str) -> None:
        self.ip(ns, "link", "add", name, "type", "bridge")
        self.ip(ns, "link", "set", name, "up")

    def attach(self, ns: str, ifname: str, bridge: str) -> None:
        self.ip(ns, "link", "set", ifname, "master", bridge)

    def addr(self, ns: str, ifname: str, cidr: str) -> None:
        self.ip(ns, "addr", "add", cidr, "dev", ifname)

    def route(self, ns: str, *args: str) -> None:
        self.ip(ns, "route", "add", *args)

    def nft(self, ns: str, ruleset: str) -> None:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"],
            input=ruleset,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"nft in {ns} failed: {proc.stderr.strip()}\n{ruleset}")

    def sysctl(self, ns: str, key: str, value: str) -> None:
        self.sh(ns, "sysctl", "-qw", f"{key}={value}")

    # -- processes ----------------------------------------------------------------------------------

    def start(
        self, name: str, cmd: Sequence[str], ns: str | None = None, env: dict[str, str] | None = None
    ) -> Process:
        full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
        out = self.workdir / f"{name}.out"
        err = self.workdir / f"{name}.err"
        with out.open("wb") as o, err.open("wb") as e:
            popen = subprocess.Popen(
                full,
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        proc = Process(name, popen, out, err)
        self.processes.append(proc)
        return proc

    # -- teardown -----------------------------------------------------------------------------------

    def close(self) -> None:
        # Signal them all first, then wait for each: processes shut down in parallel, not in turn.
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.reap(timeout=3)
        # Anything still running inside our namespaces was started by our processes (a DHCP client's
        # script, say); it belongs to this lab, so it is ended by the pid the kernel reports for it.
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for etc in self.netns_etc:
            shutil.rmtree(etc, ignore_errors=True)
        self.namespaces.clear()
        self.processes.clear()


@contextlib.contextmanager
def lab(workdir: Path) -> Iterator[Lab]:
    the_lab = Lab(workdir)
    try:
        yield the_lab
    finally:
        the_lab.close()
