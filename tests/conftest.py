"""Shared fixtures: a namespace lab per test, cleaned up whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Lab, have_root, lab


@pytest.fixture
def netlab(tmp_path: Path) -> Iterator[Lab]:
    """A lab of network namespaces, links and processes, removed at the end of the test. System tests
    need root; CI runs as root, so this fails loudly rather than skipping."""
    if not have_root():
        pytest.fail("system tests need root (CI runs as root); run `sudo make test`")
    with lab(tmp_path) as the_lab:
        yield the_lab
