"""I/O. The small UDP plumbing the lab's helper scripts share: a socket, a monotonic clock, and a loop
that drives a sans-IO STUN client until its transactions are done."""

from __future__ import annotations

import select
import socket
import time

from nat import Endpoint, StunClient, StunResult


def udp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sock.setblocking(False)
    return sock


def receive_all(sock: socket.socket) -> list[tuple[bytes, Endpoint]]:
    out: list[tuple[bytes, Endpoint]] = []
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return out
        except OSError:  # an ICMP error reported on the socket: nothing to read
            continue
        out.append((data, (addr[0], addr[1])))


def run_stun(sock: socket.socket, client: StunClient, limit_s: float = 60.0) -> list[StunResult]:
    """Drive ``client`` on ``sock`` until no transaction is pending; returns the results."""
    results: list[StunResult] = []
    deadline = time.monotonic() + limit_s
    while client.pending() and time.monotonic() < deadline:
        now = time.monotonic()
        for data, dest in client.datagrams_to_send(now):
            sock.sendto(data, dest)
        client.handle_timer(now)
        while (event := client.next_event()) is not None:
            results.append(event)
        timer = client.get_timer()
        wait = 0.05 if timer is None else max(0.0, min(timer - time.monotonic(), 0.5))
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            for data, src in receive_all(sock):
                client.receive(data, src, time.monotonic())
        while (event := client.next_event()) is not None:
            results.append(event)
    return results
