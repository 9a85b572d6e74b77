"""I/O. Reading the configuration file (and the secret file it names) from disk, and resolving
bootstrap host names at start; the parsing itself is the pure ``ipop.config``."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from overlay import Endpoint

from . import confvalues as cv
from .config import ConfigError, IpopConfig, parse_config

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 20
"""A configuration or secret file is a few hundred bytes; anything past a mebibyte is a wrong path
(a device, a log file) and is refused before it is read into memory."""


def read_small_file(path: Path) -> bytes:
    """Read a file of at most :data:`MAX_FILE_BYTES`; OSError otherwise (with a readable reason)."""
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES} bytes")
    return data


def load_config(path: Path, hostname: str | None = None) -> IpopConfig:
    """Read and check the configuration file at ``path``; raises :class:`ConfigError` (one line naming
    the file, section and key) for anything wrong, including a file that cannot be read."""
    label = str(path)
    try:
        data = read_small_file(path)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    host = hostname if hostname is not None else socket.gethostname()
    return parse_config(data, path.absolute(), hostname=host, read_file=read_small_file, label=label)


async def resolve_bootstrap(
    endpoints: tuple[Endpoint, ...],
) -> tuple[tuple[Endpoint, ...], dict[Endpoint, str]]:
    """Resolve DNS names among the bootstrap endpoints (IP literals pass through unchanged). Returns the
    resolved endpoints (a name may give several addresses; duplicates are dropped) and, for each entry
    whose name did not resolve, the reason: one dead name must not stop a node, so the caller logs the
    failures, goes on with the others, and may retry the failed ones later."""
    loop = asyncio.get_running_loop()
    resolved: list[Endpoint] = []
    failures: dict[Endpoint, str] = {}
    for host, port in endpoints:
        if cv.is_ip_literal(host):
            candidates = [(host, port)]
        else:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
            except OSError as exc:
                failures[(host, port)] = f"cannot resolve {host}: {exc.strerror or exc}"
                continue
            candidates = [(str(info[4][0]), port) for info in infos]
            log.info("bootstrap peer %s:%d resolved to %s", host, port, [h for h, _ in candidates])
        for endpoint in candidates:
            if endpoint not in resolved:
                resolved.append(endpoint)
    return tuple(resolved), failures
