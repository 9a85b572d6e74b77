"""Logging: one handler, the node's prefix on every line, lazy levels."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from ipop.logs import configure_logging, node_prefix


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    node_prefix.prefix = ""


def test_prefix_follows_what_the_node_knows(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    log = logging.getLogger("ipop.example")
    log.info("before %s", "anything")
    node_prefix.set("alice")
    log.info("named")
    node_prefix.set("alice", "3f2a9c1b")
    log.info("addressed")
    log.debug("not shown at info")
    lines = stream.getvalue().splitlines()
    assert [line.split(None, 3)[3] for line in lines] == [
        "ipop.example: before anything",
        "[alice] ipop.example: named",
        "[alice 3f2a9c1b] ipop.example: addressed",
    ]
    assert lines[0].split()[2] == "INFO"


def test_configuring_twice_replaces_the_handler(restore_logging: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", first)
    configure_logging("debug", second)
    logging.getLogger("ipop.example").debug("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
    assert logging.getLogger("asyncio").level == logging.DEBUG
    configure_logging("warning", second)
    assert logging.getLogger("asyncio").level == logging.WARNING
