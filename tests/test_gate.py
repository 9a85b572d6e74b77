"""The test-to-helper gate (tests.gate): a waiting helper goes on with the test's message, a gate no
helper holds fails at once, and a helper gives up at its deadline."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gate import GateReader, make_gate, open_gate

HELPER = """
import sys
from tests.gate import GateReader
gate = GateReader(sys.argv[1])
print("waiting", flush=True)
print(gate.wait(30.0).decode(), flush=True)
"""


def test_a_waiting_helper_goes_on_with_the_message(tmp_path: Path) -> None:
    gate = make_gate(tmp_path / "go")
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(
        [sys.executable, "-c", HELPER, str(gate)], cwd=root, stdout=subprocess.PIPE, text=True
    ) as helper:
        assert helper.stdout is not None
        assert helper.stdout.readline() == "waiting\n"
        open_gate(gate, b'{"start_at": 1.5}')
        assert helper.stdout.readline() == '{"start_at": 1.5}\n'
        assert helper.wait(10) == 0


def test_a_gate_no_helper_holds_fails_at_once(tmp_path: Path) -> None:
    gate = make_gate(tmp_path / "go")
    with pytest.raises(OSError) as raised:
        open_gate(gate)
    assert raised.value.errno == errno.ENXIO


def test_a_helper_gives_up_at_its_deadline(tmp_path: Path) -> None:
    reader = GateReader(make_gate(tmp_path / "go"))
    with pytest.raises(TimeoutError):
        reader.wait(0.05)
