"""I/O. Benchmark of secure links: handshakes per second, seal and open times, and memory per session.

Prints one JSON object. Memory is measured as the growth of the process's resident set (RSS, from
/proc/self/statm) while sessions are created, divided by the number of sessions, because the AEAD
contexts live in OpenSSL's memory where ``tracemalloc`` cannot see them; the Python-object share is
reported beside it from ``tracemalloc``. Run: ``PYTHONPATH=. python -m bench.linksec``.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import tracemalloc
from random import Random
from typing import Any

from overlay import (
    SUITE_AES_256_GCM,
    SUITE_CHACHA20_POLY1305,
    Established,
    Identity,
    LinkSecurity,
    Plaintext,
    Reply,
    Session,
)

SECRET = b"benchmark secret of 32 bytes...."
SUITE_NAMES = {SUITE_AES_256_GCM: "aes256gcm", SUITE_CHACHA20_POLY1305: "chacha20poly1305"}


def _pair(suite: int, seed: int = 1, *, cache: bool = True) -> tuple[LinkSecurity, LinkSecurity]:
    def make(s: int) -> LinkSecurity:
        return LinkSecurity(
            Identity.generate(Random(s)), "bench", SECRET, Random(s + 1), suite=suite,
            handshakes_per_second=1e12, max_pending=1 << 20, cache_cipher_contexts=cache,
        )  # fmt: skip

    return make(seed), make(seed + 100)


def _handshake(a: LinkSecurity, b: LinkSecurity, now: float) -> tuple[Session, Session]:
    hs = a.initiate(now)
    resp = b.receive(hs.packet, now)
    assert isinstance(resp, Reply)
    at_a = a.receive(resp.packet, now)
    assert isinstance(at_a, Established) and at_a.reply is not None
    at_b = b.receive(at_a.reply, now)
    assert isinstance(at_b, Established) and at_b.reply is not None
    assert isinstance(a.receive(at_b.reply, now), Plaintext)
    return at_a.session, at_b.session


def handshakes_per_second(count: int = 1000) -> float:
    a, b = _pair(SUITE_AES_256_GCM)
    start = time.perf_counter()
    for i in range(count):
        sa, sb = _handshake(a, b, float(i))
        a.close_session(sa)
        b.close_session(sb)
    return count / (time.perf_counter() - start)


def seal_open_us(suite: int, size: int, count: int, *, cache: bool = True) -> dict[str, float]:
    """Microseconds per seal and per open (``open_data``, the data plane's path) of one datagram.
    Sealing is timed on its own with the datagrams discarded, as a sender does; opening needs distinct
    datagrams, sealed beforehand. ``cache=False``: the AEAD is rebuilt for every datagram."""
    a, b = _pair(suite, cache=cache)
    sa, _ = _handshake(a, b, 0.0)
    payload = bytes(size)
    start = time.perf_counter()
    for _ in range(count):
        sa.seal(payload, 1.0)
    seal = (time.perf_counter() - start) / count * 1e6
    sa, _ = _handshake(a, b, 0.0)
    packets = [sa.seal(payload, 1.0) for _ in range(count)]
    start = time.perf_counter()
    for packet in packets:
        if b.open_data(packet, 1.0) is None:
            raise AssertionError("a sealed datagram did not open")
    open_ = (time.perf_counter() - start) / count * 1e6
    return {"seal_us": round(seal, 2), "open_us": round(open_, 2), "seal_open_us": round(seal + open_, 2)}


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def _idle_sessions(a: LinkSecurity, b: LinkSecurity, pairs: int, now: float) -> list[Session]:
    """Sessions as a node keeps its idle links: contexts dropped right after the handshake, pending
    state and reply caches expired."""
    sessions: list[Session] = []
    for i in range(pairs):
        for s in _handshake(a, b, now + i * 1e-3):
            s.drop_cipher_contexts()
            sessions.append(s)
    a.expire(now + 1e6)
    b.expire(now + 1e6)
    gc.collect()
    return sessions


def session_memory(suite: int, pairs: int = 2000) -> dict[str, float]:
    """Bytes per session: idle (keys only) and with both AEAD contexts built."""
    a, b = _pair(suite, seed=7)
    for s in _idle_sessions(a, b, 200, 0.0):  # warm the allocator up: its arenas exist before measuring
        (a if s.initiator else b).close_session(s)
    gc.collect()
    rss0 = _rss()
    sessions = _idle_sessions(a, b, pairs, 1e7)
    rss1 = _rss()
    for s in sessions:
        peer = b if s.initiator else a
        if peer.open_data(s.seal(b"wake", 2e7), 2e7) is None:
            raise AssertionError("a sealed datagram did not open")
    gc.collect()
    rss2 = _rss()
    tracemalloc.start()  # after the RSS figures: its own bookkeeping would inflate them
    py0 = tracemalloc.get_traced_memory()[0]
    more = _idle_sessions(a, b, 200, 3e7)
    py1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    n = len(sessions)
    return {
        "rss_bytes_per_idle_session": round((rss1 - rss0) / n),
        "python_bytes_per_idle_session": round((py1 - py0) / len(more)),
        "rss_bytes_per_session_with_contexts": round((rss2 - rss0) / n),
    }


def _memory_in_fresh_process(suite: int) -> dict[str, float]:
    """Memory is measured in a process of its own: memory freed by earlier measurements would be
    reused and hide the growth."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.linksec", "--memory", str(suite)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    measured: dict[str, float] = json.loads(out.stdout)
    return measured


def main(argv: list[str]) -> None:
    if argv[:1] == ["--memory"]:
        json.dump(session_memory(int(argv[1])), sys.stdout)
        return
    result: dict[str, Any] = {"handshakes_per_s": round(handshakes_per_second())}
    for suite, name in SUITE_NAMES.items():
        result[name] = {
            f"{size}B": seal_open_us(suite, size, count)
            for size, count in ((64, 50_000), (1400, 50_000), (60000, 2_000))
        }
        result[name]["64B_without_cached_contexts"] = seal_open_us(suite, 64, 50_000, cache=False)
        result[name]["memory"] = _memory_in_fresh_process(suite)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
