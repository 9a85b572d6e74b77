"""The control socket: round trips, error answers, bounded requests, and the client's messages."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from random import Random
from typing import Any

import pytest

from ipop.control import (
    MAX_REQUEST,
    ControlError,
    ControlServer,
    NodeNotRunning,
    arg,
    request,
)


async def echo(args: dict[str, Any]) -> Any:
    return {"echo": args}


async def refuse(args: dict[str, Any]) -> Any:
    raise ControlError(f"no record under {arg(args, 'key', str)!r}")


async def buggy(args: dict[str, Any]) -> Any:
    return {}["missing"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(tmp_path / "control.sock")
    srv.register("echo", echo)
    srv.register("refuse", refuse)
    srv.register("buggy", buggy)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def ask(srv: ControlServer, cmd: str, args: dict[str, Any] | None = None, wait_s: float = 5.0) -> Any:
    return await asyncio.to_thread(request, srv.path, cmd, args, timeout=wait_s)


async def test_round_trip_and_socket_mode(server: ControlServer) -> None:
    assert await ask(server, "echo", {"a": [1, 2], "b": "x"}) == {"echo": {"a": [1, 2], "b": "x"}}
    assert await ask(server, "commands") == ["buggy", "commands", "echo", "refuse"]
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(server.path.stat().st_mode)


async def test_error_answers(server: ControlServer) -> None:
    with pytest.raises(ControlError, match=r"^unknown command 'stauts' \(commands: buggy, commands, echo"):
        await ask(server, "stauts")
    with pytest.raises(ControlError, match=r"^no record under 'k'$"):
        await ask(server, "refuse", {"key": "k"})
    with pytest.raises(ControlError, match=r"^missing argument 'key'$"):
        await ask(server, "refuse")
    with pytest.raises(ControlError, match=r"^argument 'key' must be of type str$"):
        await ask(server, "refuse", {"key": 3})
    with pytest.raises(ControlError, match=r"^internal error in buggy: KeyError: 'missing'$"):
        await ask(server, "buggy")
    assert await ask(server, "echo") == {"echo": {}}  # still serving
    assert server.status()["errors"] == 5


async def raw_exchange(path: Path, payload: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    answers = [json.loads(line) async for line in reader]
    writer.close()
    await writer.wait_closed()
    return answers


async def test_malformed_requests_get_error_lines_on_one_connection(server: ControlServer) -> None:
    lines = [
        b"not json",
        b"[1, 2]",
        b'{"args": {}}',
        b'{"cmd": 5}',
        b'{"cmd": "echo", "args": []}',
        b"\xff\xfe",
        b"[" * 60000,
        b'{"cmd": "echo", "args": {"n": 1}}',
    ]
    answers = await raw_exchange(server.path, b"\n".join(lines) + b"\n")
    assert [a["ok"] for a in answers] == [False] * 7 + [True]
    assert answers[0]["error"] == "bad request: not a JSON object on one line"
    assert answers[1]["error"] == 'bad request: expected {"cmd": "...", "args": {...}}'
    assert answers[4]["error"] == "bad request: args must be an object"
    assert answers[6]["error"] == "bad request: not a JSON object on one line"
    assert answers[7] == {"ok": True, "result": {"echo": {"n": 1}}}


async def test_oversize_request_is_refused_and_connection_closed(server: ControlServer) -> None:
    big = json.dumps({"cmd": "echo", "args": {"v": "x" * MAX_REQUEST}}).encode() + b"\n"
    answers = await raw_exchange(server.path, big + b'{"cmd": "echo"}\n')
    assert answers == [{"ok": False, "error": f"request too large (at most {MAX_REQUEST} bytes)"}]
    with pytest.raises(ControlError, match="request too large"):
        await ask(server, "echo", {"v": "x" * MAX_REQUEST})
    assert await ask(server, "echo", {"v": "x" * 1000}) == {"echo": {"v": "x" * 1000}}


async def test_random_and_mutated_lines_never_break_the_server(server: ControlServer) -> None:
    rng = Random(5)
    good = b'{"cmd": "echo", "args": {"k": [1, "two", {"3": null}]}}'
    lines = []
    for i in range(400):
        if i % 2:
            line = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                line[rng.randrange(len(line))] = rng.randrange(256)
        else:
            line = bytearray(rng.randbytes(rng.randint(0, 200)))
        lines.append(bytes(line).replace(b"\n", b" "))
    answers = await raw_exchange(server.path, b"\n".join(lines) + b"\n")
    assert len(answers) == len(lines)
    assert all(isinstance(a["ok"], bool) for a in answers)
    assert await ask(server, "echo") == {"echo": {}}


async def test_client_says_no_node_is_running(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match=rf"^no node is running with state directory {tmp_path}$"):
        request(tmp_path / "control.sock", "status")
    with pytest.raises(NodeNotRunning, match="no node is running with state directory"):
        request(tmp_path / "no" / "such" / "dir" / "control.sock", "status")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()  # a crashed node leaves its socket file behind
    with pytest.raises(NodeNotRunning, match=rf"^no node is running with state directory {tmp_path}$"):
        request(tmp_path / "control.sock", "status")


async def test_a_stale_socket_file_is_replaced_at_start(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()
    srv = ControlServer(tmp_path / "control.sock")
    await srv.start()
    try:
        assert await ask(srv, "commands") == ["commands"]
    finally:
        await srv.close()
    assert not (tmp_path / "control.sock").exists()


async def test_client_times_out_on_a_node_that_does_not_answer(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def stuck(args: dict[str, Any]) -> Any:
        await release.wait()
        return "late"

    srv = ControlServer(tmp_path / "c.sock")
    srv.register("stuck", stuck)
    await srv.start()
    try:
        with pytest.raises(ControlError, match=rf"^the node at {tmp_path} did not answer within 0.3 s$"):
            await ask(srv, "stuck", wait_s=0.3)
    finally:
        release.set()
        await srv.close()


async def test_long_state_directory_paths_work(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    srv = ControlServer(deep / "control.sock")
    srv.register("echo", echo)
    await srv.start()
    try:
        assert len(str(srv.path)) > 108
        assert await ask(srv, "echo", {"x": 1}) == {"echo": {"x": 1}}
    finally:
        await srv.close()


async def test_close_ends_open_connections_and_removes_the_socket(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / "c.sock")
    await srv.start()
    reader, writer = await asyncio.open_unix_connection(str(srv.path))
    writer.write(b'{"cmd": "commands"}\n')
    assert json.loads(await reader.readline()) == {"ok": True, "result": ["commands"]}
    async with asyncio.timeout(2):
        await srv.close()
        assert await reader.read() == b""  # the idle connection was closed by the server
    writer.close()
    assert not srv.path.exists()


def test_registering_a_command_twice_is_a_bug(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / "c.sock")
    srv.register("x", echo)
    with pytest.raises(ValueError, match="already registered"):
        srv.register("x", echo)
