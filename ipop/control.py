"""I/O. The node's control socket: how ``ipop status`` and ``ipop dht ...`` talk to a running node.

A Unix stream socket in the state directory (mode 0600, in a 0700 directory: only the node's user may
talk to it). The protocol is newline-delimited JSON, one request and one response per line, any number
per connection::

    -> {"cmd": "status", "args": {}}
    <- {"ok": true, "result": {...}}
    <- {"ok": false, "error": "unknown command 'stauts' (commands: commands, dht.get, status)"}

The server is a registry of async handlers (``register("status", handler)``); a handler takes the
request's ``args`` dict and returns anything JSON can encode, or raises :class:`ControlError` to answer
with an error message. Requests are bounded (:data:`MAX_REQUEST`) and a malformed one gets an error
answer, never an exception in the node. :func:`request` is the synchronous client for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

MAX_REQUEST = 64 << 10
"""Longest request line: commands carry a key and a value of a DHT record at most (a few KB)."""

MAX_RESPONSE = 16 << 20
"""Longest answer the client reads: a status of a node with hundreds of links and records is well under
a megabyte; the bound only stops a confused peer from filling the CLI's memory."""

MAX_CONNECTIONS = 32
"""Concurrent control connections; the CLI opens one at a time, monitoring may add a few."""

IDLE_TIMEOUT_S = 60.0
"""A connection that sends nothing for this long is closed, so a stuck client holds no task forever."""

SUN_PATH_MAX = 107
"""Longest socket path bind(2) takes (108 bytes of sun_path with the NUL). Longer state directory paths
are reached through /proc/self/fd/N, the directory's open descriptor."""

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
T = TypeVar("T")


class ControlError(Exception):
    """An error answer: raised by a handler to refuse a request, and by :func:`request` when the node
    answered with an error or could not be reached."""


class NodeNotRunning(ControlError):
    """No node listens on the control socket of that state directory."""


def arg(args: dict[str, Any], name: str, kind: type[T]) -> T:
    """``args[name]`` checked to be a ``kind``; a handler's way to refuse bad arguments politely."""
    if name not in args:
        raise ControlError(f"missing argument {name!r}")
    value = args[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ControlError(f"argument {name!r} must be of type {kind.__name__}")
    return value


@contextlib.contextmanager
def _bindable(path: Path) -> Iterator[str]:
    """A path string for bind/connect that fits in sun_path, however long the real path is."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """The control socket's server, also a runtime component (``run`` serves until cancelled)."""

    name = "control"

    def __init__(self, path: Path, *, max_request: int = MAX_REQUEST) -> None:
        self.path = path
        self.max_request = max_request
        self._handlers: dict[str, Handler] = {}
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.requests = 0
        self.errors = 0
        self.register("commands", self._commands)

    def register(self, cmd: str, handler: Handler) -> None:
        """Answer ``cmd`` with ``handler``; registering a command twice is a bug and raises."""
        if cmd in self._handlers:
            raise ValueError(f"control command {cmd!r} is already registered")
        self._handlers[cmd] = handler

    async def _commands(self, args: dict[str, Any]) -> list[str]:
        return sorted(self._handlers)

    async def start(self) -> None:
        """Bind the socket (replacing a stale one: the caller holds the state directory's lock, so no
        other node can be using it) and start accepting."""
        if self._server is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with _bindable(self.path) as address:
                sock.bind(address)
            os.chmod(self.path, 0o600)
            sock.listen(MAX_CONNECTIONS)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=self.max_request)
        except BaseException:
            sock.close()
            raise
        log.info("control socket listening at %s", self.path)

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.get_running_loop().create_future()  # until the owner cancels
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop accepting, end open connections, remove the socket file."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def status(self) -> dict[str, Any]:
        return {"socket": str(self.path), "requests": self.requests, "errors": self.errors}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio starts this callback as a task of its own; it is owned here: tracked in
        # _connections, and cancelled and awaited by close().
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                writer.write(self._error(f"too many control connections (at most {MAX_CONNECTIONS})"))
                await writer.drain()
                return
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_S):
                        line = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, TimeoutError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(self._error(f"request too large (at most {self.max_request} bytes)"))
                    await writer.drain()
                    return
                writer.write(await self._dispatch(line))
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._connections.discard(task)
            writer.close()

    def _error(self, message: str) -> bytes:
        self.errors += 1
        log.debug("control: error answer: %s", message)
        return json.dumps({"ok": False, "error": message}).encode() + b"\n"

    async def _dispatch(self, line: bytes) -> bytes:
        self.requests += 1
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return self._error("bad request: not a JSON object on one line")
        if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
            return self._error('bad request: expected {"cmd": "...", "args": {...}}')
        cmd: str = message["cmd"]
        args = message.get("args", {})
        if not isinstance(args, dict):
            return self._error("bad request: args must be an object")
        handler = self._handlers.get(cmd)
        if handler is None:
            return self._error(f"unknown command {cmd!r} (commands: {', '.join(sorted(self._handlers))})")
        try:
            result = await handler(args)
            return json.dumps({"ok": True, "result": result}, separators=(",", ":")).encode() + b"\n"
        except ControlError as exc:
            return self._error(str(exc))
        except Exception as exc:
            log.exception("control command %s failed", cmd)
            return self._error(f"internal error in {cmd}: {exc.__class__.__name__}: {exc}")


def request(socket_path: Path, cmd: str, args: dict[str, Any] | None = None, *, timeout: float = 5.0) -> Any:
    """Send one command to the node whose control socket is ``socket_path`` and return its result.
    Raises :class:`NodeNotRunning` when no node listens there, and :class:`ControlError` with the
    node's message when it answered with an error, or when it did not answer within ``timeout``."""
    deadline = time.monotonic() + timeout
    state_dir = socket_path.parent
    line = json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            with _bindable(socket_path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NodeNotRunning(f"no node is running with state directory {state_dir}") from None
        except PermissionError:
            raise ControlError(
                f"not allowed to talk to the node at {socket_path} (run as its user)"
            ) from None
        except TimeoutError:
            raise ControlError(f"the node at {state_dir} did not accept within {timeout:g} s") from None
        buffer = bytearray()
        try:
            sock.sendall(line)
            while not buffer.endswith(b"\n"):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlError(f"the node at {state_dir} closed the connection without answering")
                buffer += chunk
                if len(buffer) > MAX_RESPONSE:
                    raise ControlError(f"the node's answer is larger than {MAX_RESPONSE} bytes")
        except TimeoutError:
            raise ControlError(f"the node at {state_dir} did not answer within {timeout:g} s") from None
        except ConnectionError as exc:
            raise ControlError(f"the connection to the node at {state_dir} failed: {exc}") from None
    try:
        answer = json.loads(buffer)
    except ValueError:
        raise ControlError("the node's answer is not JSON") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ControlError("the node's answer is not a control response")
    if not answer["ok"]:
        raise ControlError(str(answer.get("error", "unknown error")))
    return answer.get("result")
