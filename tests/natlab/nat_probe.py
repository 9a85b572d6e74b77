"""I/O. NAT behaviour probe for the lab: run on a host behind a NAT router, it asks the lab's STUN server
(coturn, two addresses and two ports) where it sees us, and whether answers from other addresses and
ports get through, using the project's own STUN client over real sockets. It prints one JSON line of raw
results; the test classifies them with ``nat.classify_mapping`` and ``nat.classify_filtering``.

Mapping (RFC 5780 section 4.3): one socket asks all four server endpoints; each answer is an observation
"the server at E sees us at R". Filtering (section 4.4): a fresh socket talks to the primary endpoint
only, then asks twice for an answer from the other address and port (CHANGE-REQUEST IP+port) and twice
from the other port only; an answer that arrives passed the NAT's filter.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from udploop import run_stun, udp_socket

from nat import CHANGE_IP, CHANGE_PORT, StunClient, TransactionState


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server1", required=True)
    ap.add_argument("--server2", required=True)
    ap.add_argument("--port", type=int, default=3478)
    ap.add_argument("--alt-port", type=int, default=3479)
    ap.add_argument("--local-port", type=int, required=True)
    a = ap.parse_args()
    rng = random.SystemRandom()
    primary = (a.server1, a.port)

    sock = udp_socket(a.local_port)
    client = StunClient(rng, software="ipop natlab probe", rto=0.2, max_requests=4, final_wait_factor=4)
    for server in [primary, (a.server2, a.port), (a.server2, a.alt_port), (a.server1, a.alt_port)]:
        client.request(server, 0.0)
    mapping = run_stun(sock, client)
    observations = [
        [r.server[0], r.server[1], r.mapped[0], r.mapped[1]]
        for r in mapping
        if r.state is TransactionState.SUCCEEDED and r.mapped is not None
    ]

    fsock = udp_socket(a.local_port + 1)
    fclient = StunClient(rng, rto=0.2, max_requests=3, final_wait_factor=4)
    fclient.request(primary, 0.0)
    opened = run_stun(fsock, fclient)
    filtering: list[list[object]] = []
    if opened and opened[0].state is TransactionState.SUCCEEDED:
        for _ in range(2):
            fclient.request(primary, 0.0, change=CHANGE_IP | CHANGE_PORT)
            fclient.request(primary, 0.0, change=CHANGE_PORT)
        for r in run_stun(fsock, fclient):
            kind = "other-address" if r.change & CHANGE_IP else "other-port"
            filtering.append([kind, r.state is TransactionState.SUCCEEDED])
    print(json.dumps({"local_port": a.local_port, "observations": observations, "filtering": filtering}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
