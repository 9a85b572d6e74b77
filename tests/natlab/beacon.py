"""I/O. LAN discovery in the lab: ``send`` broadcasts the project's beacon on the LAN as its scheduler
says (until ``--count`` beacons went out); ``listen`` waits for the first authentic beacon from another
node and prints it as JSON (and a line for every beacon it rejects: another realm's, a forgery)."""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import sys
import time

from nat import Beacon, BeaconScheduler, DecodeError, LanDirectory, decode_beacon, encode_beacon, is_beacon


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["send", "listen"])
    ap.add_argument("--address", required=True, help="our 20-byte overlay address, hex")
    ap.add_argument("--port", type=int, required=True, help="the beacon port (and our overlay port)")
    ap.add_argument("--key", required=True, help="beacon MAC key, hex")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--limit", type=float, default=20.0)
    a = ap.parse_args()
    me, key = bytes.fromhex(a.address), bytes.fromhex(a.key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", a.port))
    deadline = time.monotonic() + a.limit
    if a.mode == "send":
        scheduler = BeaconScheduler(random.Random(), time.monotonic(), interval_s=0.1, min_gap_s=0.05)
        while scheduler.sent < a.count and time.monotonic() < deadline:
            now = time.monotonic()
            if scheduler.due(now):
                sock.sendto(encode_beacon(Beacon(me, a.port), key), ("255.255.255.255", a.port))
            time.sleep(max(0.0, scheduler.get_timer() - time.monotonic()))
        return 0
    directory = LanDirectory(me)
    rejected = 0
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if not readable:
            continue
        data, src = sock.recvfrom(2048)
        if not is_beacon(data):
            continue
        try:
            beacon = decode_beacon(data, key)
        except DecodeError:
            rejected += 1
            print(json.dumps({"rejected": rejected, "from": src[0]}), flush=True)
            continue
        peer = directory.heard(beacon, src[0], time.monotonic())
        if peer is not None:
            print(
                json.dumps(
                    {"address": peer.address.hex(), "endpoint": list(peer.endpoint), "rejected": rejected}
                )
            )
            return 0
    print(json.dumps({"timeout": True, "rejected": rejected}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
