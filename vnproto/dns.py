"""Pure. The node's DNS responder: names of the virtual network answered locally, the rest handed back
to the node to forward upstream. dnslib does the wire format.

Theory of operation
-------------------
:meth:`DnsResponder.handle` takes the bytes of one query and returns a decision, without blocking:

- :class:`Answer` - reply bytes, ready to send: static names, PTR, errors, NXDOMAIN.
- :class:`Lookup` - a member name (``bob.<domain>``) whose address lives in the DHT. The node resolves
  it asynchronously, then calls :meth:`DnsResponder.complete` with the address (or None) for the reply.
  The decision carries the query bytes, so the responder keeps no per-query state.
- :class:`Forward` - a name outside the virtual network: send the query to the upstream resolver.
- :class:`Ignore` - not a query at all (a response, or bytes too short to answer); send nothing.

Names in the domain: ``C250005005.<domain>`` is the static name of the IPOP paper: ``C`` and the last
three octets of the address, three digits each, the first octet being the subnet's (10.250.5.5 in
10.0.0.0/8 or 10.250.0.0/16). Such names need no lookup, which is what old applications (Condor) that
want a stable name per address relied on. PTR queries for addresses of the subnet answer with the static
name. A member that exists but has no IPv6 address gets NOERROR with no answer for AAAA (saying NXDOMAIN
would make resolvers forget the A record too, RFC 8020); an unknown name gets NXDOMAIN. Negative answers
carry the zone's SOA so that resolvers cache them for the SOA minimum only (RFC 2308).

EDNS0 (RFC 6891) is tolerated: a query with an OPT record gets one back, the reply is kept within the
client's advertised UDP size (at least 512, at most ``max_udp_size``), and a reply that does not fit
is sent truncated (TC set, no records) so the client retries over TCP.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from dnslib import EDNS0, PTR, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSQuestion, DNSRecord

log = logging.getLogger(__name__)

CLASSIC_UDP_SIZE = 512
"""RFC 1035 §4.2.1: the most a client without EDNS0 accepts over UDP."""
DEFAULT_MAX_UDP_SIZE = 1232
"""What we advertise and never exceed: the DNS flag day 2020 value, which fits any path with an IPv6
minimum MTU, so a reply is never fragmented (it would be over the overlay)."""
TCP_SIZE = 65535
TC_BIT = 0x02
"""In the third byte of the header: QR, opcode (4 bits), AA, TC, RD."""
OPCODE_QUERY = 0
EDNS_BADVERS = 16
_STATIC = re.compile(r"^c([0-9]{3})([0-9]{3})([0-9]{3})$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Answer:
    reply: bytes


@dataclass(frozen=True, slots=True)
class Lookup:
    """Resolve member ``name`` (one label, lower case) through the DHT, then call
    ``DnsResponder.complete(this, ip_or_none)``. ``qtype`` is the query type (1 for A)."""

    name: str
    qtype: int
    query: bytes
    tcp: bool = False


@dataclass(frozen=True, slots=True)
class Forward:
    query: bytes


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


DnsDecision = Answer | Lookup | Forward | Ignore


@dataclass(slots=True)
class DnsCounters:
    queries: int = 0
    malformed: int = 0
    answered: int = 0
    lookups: int = 0
    forwarded: int = 0
    truncated: int = 0
    by_rcode: dict[str, int] = field(default_factory=dict)


def static_name(ip: IPv4Address, domain: str) -> str:
    """The IPOP static name of ``ip``: ``C`` and its last three octets, three digits each."""
    _, b, c, d = ip.packed
    return f"C{b:03d}{c:03d}{d:03d}.{domain}"


class DnsResponder:
    def __init__(
        self,
        domain: str,
        subnet: IPv4Network,
        *,
        member_ttl_s: int = 60,
        static_ttl_s: int = 3600,
        negative_ttl_s: int = 10,
        forward: bool = True,
        max_udp_size: int = DEFAULT_MAX_UDP_SIZE,
    ) -> None:
        """``member_ttl_s``: a minute, so a member that moved or left is forgotten quickly; static
        names never change (an hour). ``negative_ttl_s``: ten seconds, as a name not found now may be
        registered by a client that is just getting its lease. ``forward=False`` answers REFUSED for
        names outside the domain instead of asking the node to forward them."""
        if subnet.prefixlen < 8:
            raise ValueError(f"subnet {subnet}: static names keep the first octet; the prefix must be >= 8")
        if not domain.strip(".") or not all(_LABEL.match(p) for p in domain.strip(".").lower().split(".")):
            raise ValueError(f"bad DNS domain {domain!r}")
        if not CLASSIC_UDP_SIZE <= max_udp_size <= TCP_SIZE:
            raise ValueError(f"max_udp_size {max_udp_size}")
        self.domain = domain.strip(".").lower()
        self.subnet = subnet
        self.member_ttl_s = member_ttl_s
        self.static_ttl_s = static_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.forward = forward
        self.max_udp_size = max_udp_size
        self.counters = DnsCounters()
        self._suffix = "." + self.domain
        self._reverse_suffix = ".in-addr.arpa"

    # -- the two entry points ------------------------------------------------------------------------

    def handle(self, query: bytes, tcp: bool = False) -> DnsDecision:
        """Decide what to do with one query. Never raises on the query's content."""
        self.counters.queries += 1
        request = self._parse(query)
        if request is None:
            return self._formerr_or_ignore(query)
        if request.header.qr:
            return Ignore("a response, not a query")
        if request.header.opcode != OPCODE_QUERY:
            return self._answer(request, tcp, RCODE.NOTIMP)
        if len(request.questions) != 1:
            return self._answer(request, tcp, RCODE.FORMERR)
        opt = _opt(request)
        if opt is not None and _edns_version(opt) > 0:
            return self._answer(request, tcp, EDNS_BADVERS)
        question: DNSQuestion = request.q
        name = str(question.qname).rstrip(".").lower()
        qtype = question.qtype
        if name == self.domain:
            soa = [self._soa()] if qtype in (QTYPE.SOA, QTYPE.ANY) else []
            return self._answer(request, tcp, RCODE.NOERROR, answers=soa)
        if name.endswith(self._suffix):
            return self._in_domain(request, query, name[: -len(self._suffix)], qtype, tcp)
        if name.endswith(self._reverse_suffix):
            ip = _reverse_ip(name[: -len(self._reverse_suffix)])
            if ip is not None and ip in self.subnet:
                if qtype not in (QTYPE.PTR, QTYPE.ANY):
                    return self._answer(request, tcp, RCODE.NOERROR)
                target = static_name(ip, self.domain) + "."
                ptr = RR(question.qname, QTYPE.PTR, rdata=PTR(target), ttl=self.static_ttl_s)
                return self._answer(request, tcp, RCODE.NOERROR, answers=[ptr])
        if not self.forward:
            return self._answer(request, tcp, RCODE.REFUSED)
        self.counters.forwarded += 1
        return Forward(query)

    def complete(self, lookup: Lookup, ip: IPv4Address | None) -> bytes:
        """The reply to a query that needed a :class:`Lookup`: the member's address, NOERROR with no
        data for other types, or NXDOMAIN when ``ip`` is None (no such member)."""
        request = self._parse(lookup.query)
        if request is None:
            raise ValueError("complete() was given a Lookup whose query does not parse")
        if ip is None:
            return self._reply(request, lookup.tcp, RCODE.NXDOMAIN)
        answers = []
        if lookup.qtype in (QTYPE.A, QTYPE.ANY):
            answers.append(RR(request.q.qname, QTYPE.A, rdata=A(str(ip)), ttl=self.member_ttl_s))
        return self._reply(request, lookup.tcp, RCODE.NOERROR, answers=answers)

    # -- names in the domain --------------------------------------------------------------------------

    def _in_domain(self, request: DNSRecord, query: bytes, label: str, qtype: int, tcp: bool) -> DnsDecision:
        static = _STATIC.match(label)
        if static is not None:
            octets = [int(g) for g in static.groups()]
            if max(octets) <= 255:
                ip = IPv4Address(bytes((self.subnet.network_address.packed[0], *octets)))
                if ip in self.subnet:
                    answers = []
                    if qtype in (QTYPE.A, QTYPE.ANY):
                        answers.append(RR(request.q.qname, QTYPE.A, rdata=A(str(ip)), ttl=self.static_ttl_s))
                    return self._answer(request, tcp, RCODE.NOERROR, answers=answers)
            return self._answer(request, tcp, RCODE.NXDOMAIN)
        if "." in label or not _LABEL.match(label):
            return self._answer(request, tcp, RCODE.NXDOMAIN)
        self.counters.lookups += 1
        return Lookup(label, qtype, query, tcp)

    # -- replies ------------------------------------------------------------------------------------

    def _answer(self, request: DNSRecord, tcp: bool, rcode: int, answers: list[RR] | None = None) -> Answer:
        return Answer(self._reply(request, tcp, rcode, answers))

    def _reply(self, request: DNSRecord, tcp: bool, rcode: int, answers: list[RR] | None = None) -> bytes:
        self.counters.answered += 1
        key = RCODE.get(rcode, str(rcode)) if rcode < 16 else "BADVERS"
        self.counters.by_rcode[key] = self.counters.by_rcode.get(key, 0) + 1
        header = DNSHeader(id=request.header.id, qr=1, aa=1, ra=1, rd=request.header.rd, rcode=rcode & 0xF)
        reply = DNSRecord(header, questions=list(request.questions[:1]))
        for rr in answers or ():
            reply.add_answer(rr)
        if not answers and rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
            reply.add_auth(self._soa())
        opt = _opt(request)
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=self.max_udp_size, ext_rcode=rcode >> 4))
        limit = TCP_SIZE if tcp else self._udp_limit(opt)
        data = fit(reply, limit)
        if data[2] & TC_BIT:
            self.counters.truncated += 1
        return data

    def _udp_limit(self, opt: RR | None) -> int:
        if opt is None:
            return CLASSIC_UDP_SIZE
        return min(max(CLASSIC_UDP_SIZE, int(opt.rclass)), self.max_udp_size)

    def _soa(self) -> RR:
        zone = self.domain + "."
        times = (1, 3600, 600, 86400, self.negative_ttl_s)
        return RR(zone, QTYPE.SOA, rdata=SOA(zone, "hostmaster." + zone, times), ttl=self.negative_ttl_s)

    def _formerr_or_ignore(self, query: bytes) -> DnsDecision:
        """A query whose header is readable but whose body is not gets FORMERR (RFC 1035 §4.1.1), so
        the client stops waiting; anything shorter than a header is dropped."""
        self.counters.malformed += 1
        if len(query) < 12 or query[2] & 0x80:
            return Ignore("malformed")
        header = DNSHeader(id=int.from_bytes(query[0:2], "big"), qr=1, ra=1, rcode=RCODE.FORMERR)
        return Answer(DNSRecord(header).pack())

    @staticmethod
    def _parse(query: bytes) -> DNSRecord | None:
        try:
            return DNSRecord.parse(query)
        except Exception as exc:  # dnslib raises several types on bad input; all mean "malformed"
            log.debug("malformed DNS query: %r", exc)
            return None


def fit(reply: DNSRecord, limit: int) -> bytes:
    """``reply`` packed, or, if that is longer than ``limit``, the same header and question with TC set
    and no records but the OPT (RFC 2181 §9, RFC 6891 §7): the client retries over TCP."""
    data: bytes = reply.pack()
    if len(data) <= limit:
        return data
    header = reply.header
    short = DNSRecord(
        DNSHeader(id=header.id, bitmap=header.bitmap, tc=1), questions=list(reply.questions[:1])
    )
    for rr in reply.ar:
        if rr.rtype == QTYPE.OPT:
            short.add_ar(rr)
    packed: bytes = short.pack()
    return packed


def _opt(request: DNSRecord) -> RR | None:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return rr
    return None


def _edns_version(opt: RR) -> int:
    return (int(opt.ttl) >> 16) & 0xFF


def _reverse_ip(labels: str) -> IPv4Address | None:
    """The address of a 4-label reverse name, or None. Labels must be canonical decimal octets (no
    leading zeros): anything else is not the name of an address (found by fuzzing: ``00`` once reached
    ``IPv4Address``, which refuses it with its own exception)."""
    parts = labels.split(".")
    if len(parts) != 4:
        return None
    octets = []
    for part in parts:
        if not (part.isascii() and part.isdigit() and len(part) <= 3) or (len(part) > 1 and part[0] == "0"):
            return None
        value = int(part)
        if value > 255:
            return None
        octets.append(value)
    return IPv4Address(bytes(reversed(octets)))
