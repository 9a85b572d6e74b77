"""I/O. Forwarding DNS queries for names outside the virtual network to upstream resolvers, with aiodns.

The machine asks its node for every name (DHCP made the node its DNS server). Names of the domain are
answered by the node; the rest come here: the query is parsed (dnslib), asked of ``dns_upstream`` — or,
when none are configured, of the host's own resolvers from ``/etc/resolv.conf`` — through aiodns
(c-ares), and the records aiodns returns are packed into a reply to the original query. Resolvers
inside the virtual subnet are never used: on a node whose machine took the node as its resolver, that
would be the node asking itself.

Errors become answers, never exceptions: NXDOMAIN for a name that does not exist, an empty NOERROR for
a name without records of that type, SERVFAIL when no upstream answers, NOTIMP for query types c-ares
cannot ask. A reply larger than the client accepts over UDP is sent truncated, so it retries over TCP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from ipaddress import IPv4Network, ip_address
from pathlib import Path
from typing import Any

import aiodns
import aiodns.error
import pycares
from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSHeader, DNSRecord

from overlay import Endpoint

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
TIMEOUT_S = 2.0
"""Per try: a resolver that has not answered in 2 s is slow enough to try the next (glibc uses 5)."""
TRIES = 2
"""Tries per server before the query fails with SERVFAIL."""
CLASSIC_UDP = 512
MAX_UDP = 1232
"""What a client with EDNS0 gets at most: the DNS flag day 2020 value, as the local responder uses."""

_NXDOMAIN = {aiodns.error.ARES_ENOTFOUND, aiodns.error.ARES_ENONAME}
_NODATA = {aiodns.error.ARES_ENODATA}


def host_resolvers(path: Path = RESOLV_CONF) -> list[Endpoint]:
    """The ``nameserver`` lines of resolv.conf (IPv4 and IPv6), port 53; [] if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    servers: list[Endpoint] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                servers.append((str(ip_address(parts[1].split("%", 1)[0])), 53))
            except ValueError:
                continue
    return servers


def usable(servers: Sequence[Endpoint], subnet: IPv4Network) -> list[Endpoint]:
    """``servers`` without those inside the virtual subnet (the node itself, or another member)."""
    out = []
    for host, port in servers:
        ip = ip_address(host)
        if ip.version == 4 and ip in subnet:
            continue
        out.append((host, port))
    return out


def _server_text(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class UpstreamDns:
    """Forwards queries to upstream resolvers. Create inside the running event loop."""

    def __init__(self, servers: Sequence[Endpoint], subnet: IPv4Network) -> None:
        chosen = usable(servers or host_resolvers(), subnet)
        self.servers = tuple(chosen)
        self._resolver: aiodns.DNSResolver | None = None
        if chosen:
            self._resolver = aiodns.DNSResolver(
                nameservers=[_server_text(s) for s in chosen], timeout=TIMEOUT_S, tries=TRIES
            )
        else:
            log.warning("no upstream DNS resolver: names outside the virtual network get SERVFAIL")
        self.counters = {"queries": 0, "answers": 0, "nxdomain": 0, "servfail": 0}

    async def resolve(self, query: bytes) -> bytes | None:
        """The reply to ``query``, or None if it is not a query one can answer."""
        try:
            request = DNSRecord.parse(query)
        except Exception:  # dnslib raises several types on bad input; the responder already parsed it
            return None
        if len(request.questions) != 1:
            return None
        self.counters["queries"] += 1
        question = request.q
        name = str(question.qname).rstrip(".") or "."
        qtype = QTYPE.get(question.qtype, "")
        if qtype not in aiodns.query_type_map or qtype == "ANY":
            return _reply(request, RCODE.NOTIMP)
        if self._resolver is None:
            self.counters["servfail"] += 1
            return _reply(request, RCODE.SERVFAIL)
        try:
            result = await self._resolver.query_dns(name, qtype)
        except aiodns.error.DNSError as exc:
            code = exc.args[0] if exc.args else None
            if code in _NXDOMAIN:
                self.counters["nxdomain"] += 1
                return _reply(request, RCODE.NXDOMAIN)
            if code in _NODATA:
                return _reply(request, RCODE.NOERROR)
            self.counters["servfail"] += 1
            log.debug("upstream query for %s %s failed: %s", name, qtype, exc)
            return _reply(request, RCODE.SERVFAIL)
        self.counters["answers"] += 1
        return _reply(request, RCODE.NOERROR, result)

    async def close(self) -> None:
        """Cancel queries in flight and release c-ares' sockets."""
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()


def _reply(request: DNSRecord, rcode: int, result: pycares.DNSResult | None = None) -> bytes:
    header = DNSHeader(id=request.header.id, qr=1, ra=1, rd=request.header.rd, rcode=rcode)
    reply = DNSRecord(header, questions=list(request.questions[:1]))
    if result is not None:
        for section, add in ((result.answer, reply.add_answer), (result.authority, reply.add_auth)):
            for record in section:
                rr = _rr(record)
                if rr is not None:
                    add(rr)
    edns = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
    limit = CLASSIC_UDP if edns is None else min(max(CLASSIC_UDP, int(edns.rclass)), MAX_UDP)
    data: bytes = reply.pack()
    if len(data) > limit:
        short = DNSRecord(DNSHeader(id=header.id, bitmap=header.bitmap, tc=1), questions=reply.questions[:1])
        data = short.pack()
    return data


def _rr(record: Any) -> RR | None:
    """A pycares record as a dnslib RR, for the types a resolver commonly returns."""
    data = record.data
    rdata: Any
    if isinstance(data, pycares.ARecordData):
        rdata = A(data.addr)
    elif isinstance(data, pycares.AAAARecordData):
        rdata = AAAA(data.addr)
    elif isinstance(data, pycares.CNAMERecordData):
        rdata = CNAME(data.cname)
    elif isinstance(data, pycares.MXRecordData):
        rdata = MX(data.exchange, data.priority)
    elif isinstance(data, pycares.NSRecordData):
        rdata = NS(data.nsdname)
    elif isinstance(data, pycares.PTRRecordData):
        rdata = PTR(data.dname)
    elif isinstance(data, pycares.SRVRecordData):
        rdata = SRV(data.priority, data.weight, data.port, data.target)
    elif isinstance(data, pycares.TXTRecordData):
        rdata = TXT([data.data[i : i + 255] for i in range(0, len(data.data), 255)] or [b""])
    elif isinstance(data, pycares.SOARecordData):
        times = (data.serial, data.refresh, data.retry, data.expire, data.minimum)
        rdata = SOA(data.mname, data.rname, times)
    else:
        return None
    return RR(record.name, record.type, rdata=rdata, ttl=max(0, int(record.ttl)))
