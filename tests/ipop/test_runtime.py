"""The node shell in-process: start-up order, status through the control socket, components owned by
the task group and cancelled on stop, failures reported as themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ipop import runtime
from ipop.config import IpopConfig, parse_config
from ipop.control import NodeNotRunning, request
from ipop.runtime import Component, Node, NodeContext, run_node
from ipop.state import StateDir, StateError


def make_config(tmp_path: Path, extra: str = "", bootstrap: str = "[]") -> IpopConfig:
    text = (
        f"[node]\nname = 'rt'\nstate_dir = '{tmp_path / 'state'}'\n"
        f"[overlay]\nsecret = '0123456789abcdef'\nbootstrap = {bootstrap}\n{extra}"
    )
    return parse_config(text.encode(), tmp_path / "rt.toml", hostname="h", read_file=lambda p: b"")


class Probe:
    """A component that records its life."""

    name = "probe"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False
        self.cleaned = False

    async def run(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.cleaned = True

    def status(self) -> dict[str, Any]:
        return {"links": [{"kind": "near", "peer": "ab12"}], "started": self.started.is_set()}


async def ask(path: Path, cmd: str) -> Any:
    return await asyncio.to_thread(request, path, cmd, None, timeout=5)


async def test_status_then_clean_stop(tmp_path: Path) -> None:
    probe = Probe()
    seen: list[NodeContext] = []

    async def build(ctx: NodeContext) -> list[Component]:
        seen.append(ctx)
        return [probe]

    config = make_config(tmp_path, bootstrap="['udp://192.0.2.1:5800', 'udp://localhost:5801']")
    node = Node(config, build)
    task = asyncio.create_task(node.serve())
    async with asyncio.timeout(10):
        await probe.started.wait()
    socket_path = StateDir(config.node.state_dir).control_socket
    status = await ask(socket_path, "status")
    assert status["node"]["name"] == "rt"
    assert status["node"]["state"] == "running"
    assert status["node"]["address"] == format(seen[0].identity.address, "040x")
    assert status["node"]["bootstrap"][0] == "192.0.2.1:5800"
    assert "127.0.0.1:5801" in status["node"]["bootstrap"]
    assert status["probe"] == {"links": [{"kind": "near", "peer": "ab12"}], "started": True}
    assert status["control"]["requests"] == 1
    with pytest.raises(StateError, match="in use by another ipop node"):
        StateDir(config.node.state_dir).lock()

    node.request_stop("test")
    async with asyncio.timeout(2):
        await task
    assert probe.cancelled and probe.cleaned
    assert node.state == "stopped"
    assert not socket_path.exists()
    with pytest.raises(NodeNotRunning):
        await ask(socket_path, "status")
    with StateDir(config.node.state_dir) as again:  # the lock was released
        assert again.locked


async def test_stop_during_start_up_cancels_the_start(tmp_path: Path) -> None:
    release = asyncio.Event()
    building = asyncio.Event()

    async def slow_build(ctx: NodeContext) -> list[Component]:
        building.set()
        await release.wait()  # e.g. a DNS server that does not answer
        return []

    node = Node(make_config(tmp_path), slow_build)
    task = asyncio.create_task(node.serve())
    async with asyncio.timeout(10):
        await building.wait()
    assert (await ask(StateDir(tmp_path / "state").control_socket, "status"))["node"]["state"] == "starting"
    node.request_stop()
    async with asyncio.timeout(2):
        await task
    assert node.state == "stopped"


def test_a_failing_component_is_reported_as_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        name = "broken"

        async def run(self) -> None:
            raise RuntimeError("the component broke")

        def status(self) -> dict[str, Any]:
            return {}

    async def build(ctx: NodeContext) -> list[Component]:
        return [Broken()]

    monkeypatch.setattr(runtime, "build_components", build)
    with pytest.raises(RuntimeError, match=r"^the component broke$"):
        run_node(make_config(tmp_path))
    assert not (tmp_path / "state" / "control.sock").exists()


def test_a_locked_state_directory_stops_the_start(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with StateDir(config.node.state_dir), pytest.raises(StateError, match="in use by another ipop node"):
        run_node(config)
