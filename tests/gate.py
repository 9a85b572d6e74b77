"""I/O. A one-shot go-ahead from a test to a helper process it started, through a named pipe.

A helper that must wait for the test (the NAT lab's punch peers for their peer's candidates, the data
plane's sender for a shrunk path) blocks in ``select`` on a FIFO until the test writes its message,
instead of polling for a file: it goes on the moment the message is written, and gives up at its
deadline. The helper opens its end before it tells the test it is waiting, so the test's write always
finds a reader; a helper that died before that makes the write fail at once (``ENXIO``) rather than
hang the test.

    test:   path = make_gate(workdir / "go")          helper:  gate = GateReader(path)
            ...start the helper, wait for its line...          print("waiting")
            open_gate(path, b"...")                              message = gate.wait(60.0)

Linux reports no hang-up on a FIFO whose reader opened it before any writer did, so ``wait`` sleeps
until the test writes; once the writer has closed, the reader sees the whole message and then EOF.
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path


def make_gate(path: Path) -> Path:
    """Create the FIFO a helper will wait on (the test's side, before it starts the helper)."""
    os.mkfifo(path, 0o600)
    return path


def open_gate(path: Path, message: bytes = b"go") -> None:
    """Release the helper waiting on ``path`` with ``message`` (at most 4 KiB: one atomic write).

    Raises ``OSError`` (``ENXIO``) when no helper holds the gate open, e.g. because it died."""
    if len(message) > select.PIPE_BUF:
        raise ValueError(f"a gate message is at most {select.PIPE_BUF} bytes, not {len(message)}")
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, message)
    finally:
        os.close(fd)


class GateReader:
    """The helper's end of a gate: open it early, ``wait`` for the test's message later."""

    def __init__(self, path: str | Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def wait(self, timeout_s: float) -> bytes:
        """The test's message, once its writer has closed; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        chunks: list[bytes] = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no go-ahead within {timeout_s} s")
                readable, _, _ = select.select([self._fd], [], [], remaining)
                if not readable:
                    continue
                try:
                    chunk = os.read(self._fd, 4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(self._fd)
