"""The virtual network's I/O shell with a real TAP device in a lab namespace and real clients (udhcpc,
dig, ping), on a one-node overlay: a test double of the ``OverlayService`` seam whose DHT is a real
``DhtNode`` alone on its ring (every position is the node itself), as the first node of a new overlay
is. What the multi-node system tests cannot isolate is measured here: the DHCP bound time and the DNS
answer time of the shell itself."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from random import Random

import pytest

from dht import DhtClient, DhtConfig, DhtNode, OpCompleted
from ipop.config import parse_config
from ipop.state import StateDir
from ipop.vnet import VirtualNetwork, network_components
from overlay import Address, Delivered, Identity, Undeliverable
from tests.ipop.nsenter import in_netns
from tests.netns import Lab

pytestmark = pytest.mark.system

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew) ip addr replace "$ip/$mask" dev "$interface"; echo "$ip" > "{out}" ;;
    deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"""


class LoneOverlay:
    """The OverlayService seam of a node alone in its overlay, with a real DhtNode."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.handlers: dict[int, Callable[[Delivered], None]] = {}
        self.loop = asyncio.get_running_loop()
        self.node = DhtNode(self, identity, DhtConfig(), Random(1))
        self.client = DhtClient(self.node, clock=self.loop.time, wake=self._flush_soon)
        self.timer: asyncio.TimerHandle | None = None
        self.sent: list[tuple[Address, int, bytes]] = []

    # the seam
    @property
    def address(self) -> Address:
        return self.identity.address

    @property
    def dht(self) -> DhtClient:
        return self.client

    @property
    def payload_mtu(self) -> int:
        return 1405

    def send(
        self,
        dest: Address,
        service: int,
        payload: bytes,
        now: float = 0.0,
        *,
        exact: bool = True,
        detour: bool = False,
    ) -> None:
        """Both the seam's send and the DhtNode's Router.send: everything reaches this node (a lone
        node has no other first hop, so a resend's ``detour`` changes nothing)."""
        if service == 16:  # the DHT's own messages
            msg = Delivered(self.address, dest, service, payload, 0, exact)
            self.loop.call_soon(self._deliver, msg)
        else:
            self.sent.append((dest, service, payload))

    def subscribe(self, service: int, handler: Callable[[Delivered], None]) -> None:
        self.handlers[service] = handler

    def subscribe_undeliverable(self, handler: Callable[[Undeliverable], None]) -> None:
        pass

    def direct_limit(self, dest: Address) -> int:
        return 0  # alone: no direct links

    def send_direct(self, dest: Address, service: int, payloads: list[bytes], prefixed: bool = False) -> bool:
        return False

    def set_receiver(
        self, service: int, receiver: object, end_batch: Callable[[], None], sink: object = None
    ) -> None:
        pass

    def flush(self) -> None:
        pass

    # the Router seam of the DhtNode
    def ring_neighbours(self) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
        return (), ()

    def _deliver(self, msg: Delivered) -> None:
        self.node.handle_delivered(msg, self.loop.time())
        self._flush()

    def _flush_soon(self) -> None:
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        while (event := self.node.next_event()) is not None:
            if isinstance(event, OpCompleted):
                self.client.dispatch(event)
        when = self.node.get_timer()
        if self.timer is not None:
            self.timer.cancel()
        if when is not None:
            self.timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.node.handle_timer(self.loop.time())
        self._flush()


async def run_cmd(ns: str, *cmd: str) -> str:
    """Run a client in the namespace without blocking the event loop that serves it (30 s at most)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return out.decode(errors="replace")


async def test_udhcpc_dig_and_ping_against_the_shell(netlab: Lab, tmp_path: Path) -> None:
    ns = netlab.netns("shell")
    netlab.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    text = (
        f"[node]\nname = 'solo'\nstate_dir = '{tmp_path / 'state'}'\n"
        "[overlay]\nsecret = '0123456789abcdef'\nbootstrap = []\n"
        "[network]\ndevice = 'ipop0'\n"
    )
    config = parse_config(text.encode(), tmp_path / "solo.toml", hostname="h", read_file=lambda p: b"")
    state = StateDir(config.node.state_dir)
    state.prepare()
    state.lock()
    overlay = LoneOverlay(state.identity())
    with in_netns(ns):
        tap, vnet = network_components(config, state, overlay, joined=lambda: True)
    assert isinstance(vnet, VirtualNetwork)
    tasks = [asyncio.create_task(tap.run()), asyncio.create_task(vnet.run())]
    try:
        out = tmp_path / "lease"
        script = tmp_path / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        bound_times = []
        for _ in range(3):
            started = time.monotonic()
            log = await run_cmd(ns, "udhcpc", "-q", "-n", "-f", "-i", "ipop0", "-s", str(script), "-t", "5")
            bound_times.append(time.monotonic() - started)
            assert out.exists(), log
        address = out.read_text().strip()
        assert address.startswith("10.250.") and vnet.core.claims.status()[0]["state"] == "held"
        print(f"dhcp bound (udhcpc start to exit) {min(bound_times):.3f}..{max(bound_times):.3f} s")
        answer = await run_cmd(ns, "dig", "@10.250.0.1", "+tries=1", "+time=2", "solo.ipop")
        assert address in answer and "status: NOERROR" in answer
        times = [int(t) for t in re.findall(r"Query time: (\d+) msec", answer)]
        assert times and times[0] < 1000
        pong = await run_cmd(ns, "ping", "-n", "-c", "2", "-W", "2", "10.250.0.1")
        assert " 0% packet loss" in pong, pong
        assert vnet.status()["leases"][0]["ip"] == address
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        state.unlock()
    assert state.path.joinpath("leases.json").exists()
