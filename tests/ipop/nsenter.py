"""Test support: run a block of this process's code inside a network namespace.

A TAP device belongs to the namespace that was current when it was created, and so do the sockets
pytun uses to set its MTU and MAC. Switching the calling thread's namespace with setns(2) for the
duration of the block lets a test create a real device inside a lab namespace and then read and write
it from the test itself. (Python 3.12 has os.setns; 3.11 reaches it through libc.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
