"""I/O. A stub DNS server for the system tests: the "upstream" resolver on the underlay that a node
forwards names outside its domain to. Run as ``python -m tests.ipop.stubdns IP PORT``; it answers
``NAME.stub.test`` with an A record of 192.0.2.53 and NXDOMAIN for everything else, and prints one
JSON line per query (so a test can see that the query came from the node, not the machine)."""

from __future__ import annotations

import json
import socket
import sys

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

ANSWER = "192.0.2.53"


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], int(sys.argv[2])))
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = DNSRecord.parse(data)
        except Exception:
            continue
        name = str(query.q.qname).rstrip(".").lower()
        reply = query.reply()
        if name.endswith(".stub.test"):
            if query.q.qtype == QTYPE.A:
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(ANSWER), ttl=30))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        print(json.dumps({"event": "query", "name": name, "from": peer[0]}), flush=True)
        sock.sendto(reply.pack(), peer)


if __name__ == "__main__":
    main()
