"""I/O. The asyncio shell of ``ipop up``: one node, from start to a clean stop.

Theory of operation. :func:`serve` takes a checked configuration and

1. prepares and locks the state directory (two nodes never share one), loads or creates the identity,
   and sets the log prefix to the node's name and short overlay address;
2. starts the control server, whose ``status`` command answers from then on with what is known;
3. resolves bootstrap host names (failures are logged and kept for retry, never fatal);
4. builds the node's components (:func:`build_components`: the one place where parts are added) —
   each a :class:`Component` with ``async run()`` and ``status()``;
5. runs every component in one ``asyncio.TaskGroup`` (no task without an owner) until SIGINT or
   SIGTERM, or until a component fails;
6. cancels them all; each cleans up in its ``finally`` (the TAP device is closed, the control socket
   removed). A watchdog ends the process if that takes longer than :data:`SHUTDOWN_GRACE_S`, so a
   stop never takes more than 2 s.

States: ``starting`` -> ``running`` -> ``stopping`` -> ``stopped`` (``status`` reports it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from overlay import Endpoint, Identity, short, to_hex

from . import confvalues as cv
from .config import IpopConfig
from .configfile import resolve_bootstrap
from .control import ControlServer
from .heap import keep_heap_top
from .logs import node_prefix
from .overlayport import OverlayPort
from .state import StateDir
from .vnet import network_components

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 1.5
"""Components get this long to finish after the stop signal; then the watchdog exits the process
(status 1, naming the laggards). 1.5 s keeps ``ipop up`` within the 2 s stop that issue 5 promises, with
room for the interpreter's own exit."""


class Component(Protocol):
    """A part of the running node (the overlay driver, the TAP port, the control server, ...)."""

    name: str
    """Key of this component's section in ``ipop status``."""

    async def run(self) -> None:
        """Run until cancelled, then clean up (in ``finally``) within :data:`SHUTDOWN_GRACE_S`."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON-encodable snapshot for ``ipop status``. Lists of objects show as tables."""
        ...


@dataclass
class NodeContext:
    """What components are built from."""

    config: IpopConfig
    state: StateDir
    identity: Identity
    control: ControlServer
    bootstrap: tuple[Endpoint, ...] = ()
    """Bootstrap endpoints with host names resolved to addresses."""
    bootstrap_unresolved: tuple[Endpoint, ...] = ()
    """Bootstrap entries whose names did not resolve at start; the overlay driver may retry them with
    ``ipop.configfile.resolve_bootstrap``."""
    components: list[Component] = field(default_factory=list)
    overlay: OverlayPort | None = None
    """The node's overlay and DHT (an ``OverlayService`` for the other components), once built."""


async def build_components(ctx: NodeContext) -> list[Component]:
    """The node's parts, in start order. This is where the overlay driver, the DHT and the TAP frame
    handler are added (the overlay's UDP driver binds ``ctx.config.node.listen`` and takes
    ``ctx.bootstrap``; control commands are registered on ``ctx.control``)."""
    overlay = OverlayPort(ctx)
    ctx.overlay = overlay
    components: list[Component] = [overlay]
    if ctx.config.network is not None:
        components += network_components(ctx.config, ctx.state, overlay, lambda: overlay.joined)
    return components


ComponentBuilder = Callable[[NodeContext], Awaitable[list[Component]]]
"""Builds the components of a node; :func:`build_components` unless a test or tool passes another."""


class Node:
    """One running node: the shell around its components."""

    def __init__(self, config: IpopConfig, build: ComponentBuilder | None = None) -> None:
        self.config = config
        self.build = build if build is not None else build_components
        self.state = "starting"
        self.started = time.monotonic()
        self.ctx: NodeContext | None = None
        self.stop_requested = asyncio.Event()

    def request_stop(self, why: str = "") -> None:
        if not self.stop_requested.is_set():
            log.info("stopping%s", f" ({why})" if why else "")
            self.stop_requested.set()

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        """The ``status`` control command: the node itself, then one section per component."""
        config = self.config
        node: dict[str, Any] = {
            "name": config.node.name,
            "state": self.state,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "realm": config.overlay.realm,
            "listen": cv.format_endpoint(config.node.listen),
            "state_dir": str(config.node.state_dir),
            "namespace": config.network.namespace if config.network else None,
        }
        result: dict[str, Any] = {"node": node}
        if self.ctx is not None:
            node["address"] = to_hex(self.ctx.identity.address)
            node["short"] = short(self.ctx.identity.address)
            node["bootstrap"] = [cv.format_endpoint(e) for e in self.ctx.bootstrap]
            if self.ctx.bootstrap_unresolved:
                node["bootstrap_unresolved"] = [cv.format_endpoint(e) for e in self.ctx.bootstrap_unresolved]
            for component in (self.ctx.control, *self.ctx.components):
                result[component.name] = component.status()
        return result

    async def serve(self) -> None:
        """Run the node until a stop is requested (see the module's theory of operation)."""
        config = self.config
        self._install_signals()
        state = StateDir(config.node.state_dir)
        try:
            state.prepare()
            state.lock()
            try:
                identity = state.identity()
                node_prefix.set(config.node.name, short(identity.address))
                log.info(
                    "node %s, overlay address %s, state in %s",
                    config.node.name,
                    to_hex(identity.address),
                    state.path,
                )
                control = ControlServer(state.control_socket)
                control.register("status", self.status)
                await control.start()
                self.ctx = NodeContext(config, state, identity, control)
                await self._run(self.ctx)
            finally:
                state.unlock()
        finally:
            self._remove_signals()
            self.state = "stopped"
            log.info("stopped")

    async def _run(self, ctx: NodeContext) -> None:
        tasks: list[asyncio.Task[None]] = []
        watchdog: asyncio.TimerHandle | None = None
        try:
            async with asyncio.TaskGroup() as group:
                tasks.append(group.create_task(ctx.control.run(), name="control"))
                tasks.append(group.create_task(self._start(ctx, group, tasks), name="start"))
                await self.stop_requested.wait()
                self.state = "stopping"
                watchdog = asyncio.get_running_loop().call_later(SHUTDOWN_GRACE_S, _overdue, tasks)
                for task in tasks:
                    task.cancel()
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _start(
        self, ctx: NodeContext, group: asyncio.TaskGroup, tasks: list[asyncio.Task[None]]
    ) -> None:
        """Resolve the bootstrap peers, build the components and start each in the group. Runs as a
        task of the group itself, so that a stop during start-up (a slow DNS server) cancels it."""
        ctx.bootstrap, failures = await resolve_bootstrap(ctx.config.overlay.bootstrap)
        for (host, port), reason in failures.items():
            log.warning("bootstrap peer %s:%d: %s; will retry", host, port, reason)
        ctx.bootstrap_unresolved = tuple(failures)
        for component in await self.build(ctx):
            ctx.components.append(component)
            tasks.append(group.create_task(component.run(), name=component.name))
        self.state = "running"
        names = ", ".join(c.name for c in ctx.components) or "no components besides control"
        log.info("running: %s", names)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _overdue(tasks: Sequence[asyncio.Task[None]]) -> None:
    late = [t.get_name() for t in tasks if not t.done()]
    log.error("components still running %.1f s after the stop: %s; exiting now", SHUTDOWN_GRACE_S, late)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(1)


def run_node(config: IpopConfig) -> None:
    """``ipop up``: run a node in the foreground until SIGINT or SIGTERM. Returns after a clean stop.
    A failure raises the exception itself, not the task group's wrapper around it, so that the CLI
    can report a start-up failure (StateError, TapError, OSError) in one line."""
    keep_heap_top()  # the data plane's 64 KiB buffers: no page faults per frame (ipop.heap)
    try:
        asyncio.run(Node(config).serve())
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
