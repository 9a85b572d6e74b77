"""I/O. One side of a hole punch in the NAT lab, driven by the project's ``nat.PunchSession`` over a real
UDP socket.

1. Learn our reflexive endpoint from the lab's STUN server on the punching socket and print it
   (``{"event": "reflexive", ...}``).
2. Wait for the test's go-ahead on its gate (``tests.gate``): the peer's candidates, the moment to start (a
   ``time.monotonic()`` value: the clock is shared by all namespaces, so the test can start both sides
   at the same instant, or one ahead of the other), the hold time and the pre-punch TTL.
3. Punch: send what the session says (probes are ``nat.probe`` PROBE datagrams with the attempt's
   token, each IP TTL set as asked), answer every valid probe with a REPLY to its source, feed probes
   and replies to the session.
4. On success keep answering the peer's probes until it has been quiet for ``--linger-idle`` seconds
   (it stops probing once it has succeeded too), then print the result (``{"event": "result", ...}``).
   On failure print it at once: the overlay would now relay.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from udploop import receive_all, run_stun, udp_socket

from nat import (
    DecodeError,
    ProbeKind,
    PunchConfig,
    PunchFailed,
    PunchProbe,
    PunchSession,
    PunchState,
    PunchSucceeded,
    StunClient,
    TransactionState,
    decode_probe,
    encode_probe,
    is_probe,
)
from tests.gate import GateReader


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host-ip", required=True)
    ap.add_argument("--server", required=True, help="STUN server ip:port")
    ap.add_argument("--key", required=True, help="probe MAC key, hex")
    ap.add_argument("--token", type=int, required=True)
    ap.add_argument("--go", required=True, help="the FIFO (tests.gate) the test writes the go-ahead to")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--linger-idle", type=float, default=1.0)
    ap.add_argument("--linger-max", type=float, default=4.0)
    a = ap.parse_args()
    key = bytes.fromhex(a.key)
    host, port = a.server.rsplit(":", 1)

    gate = GateReader(a.go)  # open before the reflexive line: the test's write must find a reader
    sock = udp_socket(a.port)
    default_ttl = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
    # One transaction of 5 requests fails on a link with 20 % loss each way 0.36^5 = 0.6 % of the
    # time; three in a row (about 19 s at most, inside the test's 30 s) almost never.
    for _ in range(3):
        stun = StunClient(random.SystemRandom(), rto=0.2, max_requests=5)
        stun.request((host, int(port)), time.monotonic())
        results = run_stun(sock, stun)
        if results and results[0].state is TransactionState.SUCCEEDED:
            break
    if not results or results[0].state is not TransactionState.SUCCEEDED or results[0].mapped is None:
        emit({"event": "error", "error": "no reflexive endpoint", "name": a.name})
        return 2
    emit(
        {
            "event": "reflexive",
            "name": a.name,
            "reflexive": list(results[0].mapped),
            "host": [a.host_ip, a.port],
        }
    )

    try:
        go: dict[str, Any] = json.loads(gate.wait(60.0))
    except TimeoutError:
        raise SystemExit(f"no go-ahead on {a.go} within 60 s") from None
    remote = [(str(ep[0]), int(ep[1])) for ep in go["remote"]]
    start_at = float(go["start_at"])
    config = PunchConfig(prepunch_ttl=int(go.get("prepunch_ttl", 2)), timeout_s=a.timeout)
    hold = float(go.get("hold", 0.0))
    time.sleep(max(0.0, start_at - time.monotonic()))  # both sides start at the instant the test chose

    session = PunchSession(remote, time.monotonic(), config=config, hold_s=hold)
    seq = 0
    bad = 0
    sent_log: list[list[object]] = []
    success_at: float | None = None
    last_peer_probe = 0.0
    outcome: dict[str, object] = {}
    while True:
        now = time.monotonic()
        session.handle_timer(now)
        for dest, ttl in session.probes_due(now):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl or default_ttl)
            sock.sendto(encode_probe(PunchProbe(ProbeKind.PROBE, a.token, seq), key), dest)
            seq += 1
            if len(sent_log) < 64:
                sent_log.append([round(now - session.started_at, 4), dest[0], dest[1], ttl])
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, default_ttl)
        while (event := session.next_event()) is not None:
            if isinstance(event, PunchSucceeded):
                success_at = now
                outcome = {
                    "result": "direct",
                    "endpoint": list(event.endpoint),
                    "elapsed": round(event.elapsed, 4),
                    "peer_reflexive": event.peer_reflexive,
                }
            elif isinstance(event, PunchFailed):
                outcome = {
                    "result": "failed",
                    "elapsed": round(event.elapsed, 4),
                    "received_any": event.received_any,
                }
        if session.state is PunchState.FAILED:
            break
        if success_at is not None:
            quiet_since = max(success_at, last_peer_probe)
            if now - quiet_since >= a.linger_idle or now - success_at >= a.linger_max:
                break
            wait = 0.05
        else:
            timer = session.get_timer()
            wait = 0.05 if timer is None else max(0.0, timer - now)
        readable, _, _ = select.select([sock], [], [], min(wait, 0.05))
        if not readable:
            continue
        for data, src in receive_all(sock):
            if not is_probe(data):
                continue  # a late STUN answer
            try:
                probe = decode_probe(data, key)
            except DecodeError:
                bad += 1
                continue
            if probe.token != a.token:
                bad += 1
                continue
            now = time.monotonic()
            if probe.kind is ProbeKind.PROBE:
                sock.sendto(encode_probe(PunchProbe(ProbeKind.REPLY, a.token, probe.seq), key), src)
                last_peer_probe = now
                session.probe_received(src, now)
            elif probe.kind is ProbeKind.REPLY:
                session.reply_received(src, now)
    emit(
        {
            "event": "result",
            "name": a.name,
            **outcome,
            "probes": session.probes_sent,
            "learned": [list(e) for e in session.learned],
            "bad": bad,
            "sent": sent_log,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
