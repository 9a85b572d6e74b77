"""I/O. The namespace lab of the data-plane benchmark (``bench.dataplane``): two network namespaces
joined by a veth pair with the underlay MTU, the processes started in them, and the two measurements
every tunnel is put through (one iperf3 TCP stream, ping's average RTT).

Everything made here carries the prefix ``dp<pid>`` and is removed by :meth:`Lab.close`, also after a
failure or Ctrl-C; processes are ended by the pid recorded when they were started (and whatever is left
inside the lab's own namespaces by ``ip netns pids``), never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

UNDERLAY_A, UNDERLAY_B = "10.201.0.1", "10.201.0.2"
IPERF_PORT = 5201
"""iperf3's default; the namespaces are private to this run, so no other process can hold it."""
PING = ("-q", "-c", "200", "-i", "0.005", "-s", "56")
"""200 pings 5 ms apart: a second of samples, enough for a stable average of sub-millisecond RTTs."""


class Lab:
    """The namespaces, processes and files of one run, removed by :meth:`close`."""

    def __init__(self, mtu: int, seconds: float) -> None:
        self.mtu = mtu
        self.seconds = seconds
        self.tag = f"dp{os.getpid() % 100000}"
        self.ns_a, self.ns_b = f"{self.tag}-a", f"{self.tag}-b"
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.tag}."))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.namespaces: list[str] = []
        self.notes: list[str] = []
        self.last_tcp_rtt_ms: float | None = None
        self.last_tcp_retransmits: int | None = None

    # -- plumbing --------------------------------------------------------------------------------------

    def run(self, *cmd: str, ns: str | None = None, check: bool = True, timeout: float = 60) -> str:
        full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(full)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def start(
        self, name: str, cmd: Sequence[str], ns: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def setup(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            self.run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            self.run("ip", "-n", ns, "link", "set", "lo", "up")
        va, vb = f"{self.tag}a", f"{self.tag}b"
        self.run(
            "ip",
            "link",
            "add",
            va,
            "netns",
            self.ns_a,
            "mtu",
            str(self.mtu),
            "type",
            "veth",
            "peer",
            "name",
            vb,
            "netns",
            self.ns_b,
            "mtu",
            str(self.mtu),
        )
        for ns, dev, ip in ((self.ns_a, va, UNDERLAY_A), (self.ns_b, vb, UNDERLAY_B)):
            self.run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            self.run("ip", "-n", ns, "link", "set", dev, "up")

    def close(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
            for pid in pids.split():  # started by our processes inside our namespaces
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- measurements ----------------------------------------------------------------------------------

    def iperf(self, server_ip: str, watch: Sequence[int] = ()) -> tuple[float | None, dict[int, float]]:
        """Gbit/s received by a single TCP stream from A to B, and the CPU % of ``watch`` meanwhile.
        The sender's mean TCP RTT of the run is left in ``last_tcp_rtt_ms`` and its retransmitted
        segments in ``last_tcp_retransmits`` (None when not reported)."""
        self.last_tcp_rtt_ms = None
        self.last_tcp_retransmits = None
        server = self.start("iperf3-server", ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], self.ns_b)
        try:
            wait_until(lambda: f":{IPERF_PORT}" in self.run("ss", "-ltn", ns=self.ns_b), 10, "iperf3 server")
            before = {pid: cpu_seconds(pid) for pid in watch}
            t0 = time.monotonic()
            out = self.run(
                "iperf3",
                "-c",
                server_ip,
                "-p",
                str(IPERF_PORT),
                "-t",
                str(self.seconds),
                "-J",
                ns=self.ns_a,
                check=False,
                timeout=self.seconds + 30,
            )
            elapsed = time.monotonic() - t0
            cpu = {pid: round(100 * (cpu_seconds(pid) - before[pid]) / elapsed, 1) for pid in watch}
        finally:
            self.stop(server)
        try:
            result = json.loads(out)
            with contextlib.suppress(KeyError, IndexError, TypeError):
                self.last_tcp_rtt_ms = result["end"]["streams"][0]["sender"]["mean_rtt"] / 1000
            with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
                self.last_tcp_retransmits = int(result["end"]["streams"][0]["sender"]["retransmits"])
            return result["end"]["sum_received"]["bits_per_second"] / 1e9, cpu
        except (ValueError, KeyError):
            self.notes.append(f"iperf3 to {server_ip} failed: {out[-300:]}")
            return None, cpu

    def ping_ms(self, ip: str) -> float | None:
        out = self.run("ping", *PING, ip, ns=self.ns_a, check=False)
        m = re.search(r"= [\d.]+/([\d.]+)/", out)
        return float(m.group(1)) if m else None

    def ping_until(self, ip: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run("ping", "-c", "1", "-W", "1", ip, ns=self.ns_a, check=False)
            if " 0% packet loss" in out:
                return time.monotonic()
        return None

    # -- ipop ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` with a deadline (a bounded wait for a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does, through the ``finally`` that cleans up."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
