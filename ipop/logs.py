"""I/O. Logging of the ipop process, configured in one place (the CLI calls :func:`configure_logging`);
every other module only does ``log = logging.getLogger(__name__)``.

Each line carries the node's prefix — its name, and the short form of its overlay address once the
identity is loaded — so that the logs of many nodes (a test, the demo, a terminal multiplexer) can be
merged and still read. The prefix is added by a filter on the one handler, which the runtime updates
through :data:`node_prefix` when it learns the address.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(node_prefix)s%(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

QUIET_LIBRARIES = ("asyncio",)
"""Libraries whose INFO chatter (asyncio's slow-callback notes, say) is not the node's story; they log
at WARNING and above unless the node runs at debug level."""


class NodePrefix(logging.Filter):
    """Adds ``record.node_prefix`` (``"[alice 3f2a9c1b] "``, or ``""`` before anything is known)."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix = ""

    def set(self, name: str, short_address: str | None = None) -> None:
        self.prefix = f"[{name} {short_address}] " if short_address else f"[{name}] "

    def filter(self, record: logging.LogRecord) -> bool:
        record.node_prefix = self.prefix
        return True


node_prefix = NodePrefix()
"""The process's prefix filter: one node per process, so one prefix."""


def configure_logging(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send log records at ``level`` and above to ``stream`` (standard error by default), replacing any
    handler an earlier call installed. Returns the handler."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_ipop", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(node_prefix)
    handler._ipop = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    numeric = LEVELS[level]
    root.setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(numeric if numeric == logging.DEBUG else logging.WARNING)
    return handler
