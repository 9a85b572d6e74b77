"""I/O. Test support for the data plane's system test: a TCP or UDP stream of known content between two
machines, each end printing what it saw as one JSON line, so the test compares checksums.

    python -m tests.ipop.streamcheck tcp-sink HOST PORT            # prints {"bytes": n, "sha256": ...}
    python -m tests.ipop.streamcheck tcp-send HOST PORT BYTES SEED [PAUSE_AT GATE]
                                                     # prints the same for what it sent
    python -m tests.ipop.streamcheck udp-sink HOST PORT COUNT
    python -m tests.ipop.streamcheck udp-send HOST PORT COUNT SIZE SEED

TCP content is a seeded pseudo-random stream. With ``PAUSE_AT`` and ``GATE`` (a FIFO of ``tests.gate``)
the sender prints ``{"paused": PAUSE_AT}`` once it has sent that many bytes and goes on when the test
opens the gate (the test changes the path meanwhile). A UDP datagram carries its sequence number and
content derived from it, so the sink checks every datagram it receives on its own and reports how many
arrived intact, how many were corrupt, and a digest over the intact ones. The UDP sender keeps at most
``WINDOW`` datagrams unacknowledged: the sink acknowledges the highest sequence number it saw after each
window, so the stream goes as fast as the path carries it without overrunning a socket buffer, and a
lost acknowledgement costs one ``ACK_WAIT_S`` wait, not the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
import sys
from random import Random

from tests.gate import GateReader

CHUNK = 1 << 16
WINDOW = 32
"""Datagrams in flight at most: 32 x 1100 bytes stays far below any socket buffer."""
ACK_WAIT_S = 1.0
"""How long the sender waits for an acknowledgement before it goes on (the ack was lost)."""
IDLE_S = 5.0
"""The UDP sink stops after this long without a datagram (the sender has finished or died)."""
GATE_WAIT_S = 60.0
"""The paused TCP sender goes on after this long even without its go-ahead (the test has failed)."""
SEQ = struct.Struct("!I")


def stream(total: int, seed: int) -> bytes:
    rng = Random(seed)
    out = bytearray()
    while len(out) < total:
        out += rng.randbytes(min(CHUNK, total - len(out)))
    return bytes(out)


def datagram(seq: int, size: int, seed: int) -> bytes:
    body = Random(seed * 1_000_003 + seq).randbytes(size - SEQ.size)
    return SEQ.pack(seq) + body


def tcp_sink(host: str, port: int) -> dict[str, object]:
    with socket.create_server((host, port)) as server:
        print(json.dumps({"listening": port}), flush=True)
        conn, _ = server.accept()
        digest, total = hashlib.sha256(), 0
        with conn:
            while data := conn.recv(CHUNK):
                digest.update(data)
                total += len(data)
    return {"bytes": total, "sha256": digest.hexdigest()}


def tcp_send(
    host: str, port: int, total: int, seed: int, pause_at: int = 0, gate: str = ""
) -> dict[str, object]:
    data = stream(total, seed)
    with socket.create_connection((host, port), timeout=120) as conn:
        if pause_at:
            conn.sendall(data[:pause_at])
            reader = GateReader(gate)
            print(json.dumps({"paused": pause_at}), flush=True)
            reader.wait(GATE_WAIT_S)
        conn.sendall(data[pause_at:])
    return {"bytes": total, "sha256": hashlib.sha256(data).hexdigest()}


def udp_sink(host: str, port: int, count: int) -> dict[str, object]:
    seen: dict[int, bytes] = {}
    corrupt = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        sock.settimeout(IDLE_S)
        print(json.dumps({"listening": port}), flush=True)
        size = seed = None
        while len(seen) < count:
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                break
            if data.startswith(b"seed"):
                size, seed = SEQ.unpack_from(data, 4)[0], SEQ.unpack_from(data, 8)[0]
                sock.sendto(b"go", peer)
                continue
            seq = SEQ.unpack_from(data)[0]
            if size is None or seed is None or data != datagram(seq, size, seed):
                corrupt += 1
            else:
                seen[seq] = data
            if (seq + 1) % WINDOW == 0 or seq + 1 == count:
                sock.sendto(SEQ.pack(seq), peer)
    digest = hashlib.sha256(b"".join(seen[k] for k in sorted(seen)))
    return {"received": len(seen), "corrupt": corrupt, "sha256": digest.hexdigest(), "seqs": sorted(seen)}


def udp_send(host: str, port: int, count: int, size: int, seed: int) -> dict[str, object]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.settimeout(ACK_WAIT_S)
        for _ in range(30):  # the stream starts once the sink heard the parameters
            sock.send(b"seed" + SEQ.pack(size) + SEQ.pack(seed))
            try:
                if sock.recv(16) == b"go":
                    break
            except (TimeoutError, ConnectionRefusedError):
                continue
        else:
            raise SystemExit("the UDP sink never answered")
        for start in range(0, count, WINDOW):
            for seq in range(start, min(start + WINDOW, count)):
                sock.send(datagram(seq, size, seed))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                sock.recv(16)
    return {"sent": count}


def expected_udp_digest(seqs: list[int], size: int, seed: int) -> str:
    """The digest the sink reports when exactly ``seqs`` arrived intact."""
    return hashlib.sha256(b"".join(datagram(s, size, seed) for s in seqs)).hexdigest()


def main(argv: list[str]) -> None:
    mode, host, port, *rest = argv
    gate = rest.pop() if mode == "tcp-send" and len(rest) == 4 else ""
    args = [int(a) for a in rest]
    if mode == "tcp-sink":
        result = tcp_sink(host, int(port))
    elif mode == "tcp-send":
        result = tcp_send(host, int(port), *args, gate=gate)
    elif mode == "udp-sink":
        result = udp_sink(host, int(port), *args)
    elif mode == "udp-send":
        result = udp_send(host, int(port), *args)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
