"""Pure. Parsers for the values a configuration file spells as text: endpoints, bootstrap URLs, DNS
names, interface names.

Each parser takes the text and returns a typed value or raises :class:`ValueError` whose message says
what is wrong with the value alone; ``ipop.config`` prefixes it with the file, section and key so that
the user reads one line that names everything (``bootstrap.toml: [overlay] bootstrap[0]: ...``).
"""

from __future__ import annotations

import ipaddress
import re

from overlay import Endpoint

MAX_PORT = 65535

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""One DNS label as RFC 1123 host names allow it (letters, digits, inner hyphens, at most 63 octets),
compared in lower case. Member names become ``NAME.<domain>`` in the node's DNS, so they must be this."""

MAX_DNS_NAME = 253
"""Longest presentation form of a DNS name without the trailing dot (RFC 1035's 255 octets on the
wire)."""

IFNAMSIZ = 16
"""Linux's interface name buffer, NUL included: a name has at most 15 characters."""

BOOTSTRAP_SCHEME = "udp://"
"""The only transport the overlay speaks; the scheme is spelled out so that other transports can be
added later without changing the meaning of existing files."""


def dns_label(text: str) -> str:
    """A single DNS label, lower-cased."""
    label = text.lower()
    if not DNS_LABEL.match(label):
        raise ValueError(
            f"{text!r} is not a DNS label (letters, digits and inner hyphens, at most 63 characters)"
        )
    return label


def dns_name(text: str) -> str:
    """A DNS name of one or more labels, lower-cased, without a trailing dot."""
    name = text.lower().removesuffix(".")
    if not name or len(name) > MAX_DNS_NAME or not all(DNS_LABEL.match(p) for p in name.split(".")):
        raise ValueError(f"{text!r} is not a DNS name (dot-separated labels of letters, digits, hyphens)")
    return name


def is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def port_number(text: str, *, allow_zero: bool = False) -> int:
    if not text.isdigit() or len(text) > 5:
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    low = 0 if allow_zero else 1
    if not low <= port <= MAX_PORT:
        raise ValueError(f"port {port} is not in {low}..{MAX_PORT}")
    return port


def split_host_port(text: str) -> tuple[str, str | None]:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST``, ``[V6]`` or a bare IPv6 literal -> (host, port text or
    None). Brackets are removed; the host is not checked here."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: a bracketed IPv6 address is written [ADDRESS]:PORT")
        if not is_ip_literal(host) or ipaddress.ip_address(host).version != 6:
            raise ValueError(f"{text!r}: {host!r} in brackets is not an IPv6 address")
        return host, (rest[1:] if rest else None)
    if text.count(":") > 1:
        if not is_ip_literal(text):
            raise ValueError(f"{text!r} is not an address; write IPv6 with a port as [ADDRESS]:PORT")
        return text, None
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def ip_endpoint(text: str, *, default_port: int | None = None, allow_zero: bool = False) -> Endpoint:
    """An IP literal with a port, e.g. ``0.0.0.0:5800``, ``[::]:5800``, ``192.0.2.1`` (if a default
    port is given). Host names are refused: these are addresses the node binds or sends to at once."""
    host, port = split_host_port(text)
    if not is_ip_literal(host):
        raise ValueError(f"{text!r}: {host!r} is not an IP address")
    if port is None:
        if default_port is None:
            raise ValueError(f"{text!r} has no port (write ADDRESS:PORT)")
        return host, default_port
    return str(ipaddress.ip_address(host)), port_number(port, allow_zero=allow_zero)


def host_endpoint(text: str, *, default_port: int | None = None) -> Endpoint:
    """A host (IP literal or DNS name, resolved later by the I/O layer) with a port."""
    host, port = split_host_port(text)
    if is_ip_literal(host):
        host = str(ipaddress.ip_address(host))
    else:
        try:
            host = dns_name(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is neither an IP address nor a host name") from None
    if port is None:
        if default_port is None:
            raise ValueError(f"{text!r} has no port (write HOST:PORT)")
        return host, default_port
    return host, port_number(port)


def bootstrap_url(text: str) -> Endpoint:
    """``udp://HOST:PORT`` -> (host, port); HOST is an IP literal or a DNS name."""
    if not text.startswith(BOOTSTRAP_SCHEME):
        raise ValueError(f'{text!r} is not of the form "udp://HOST:PORT"')
    rest = text[len(BOOTSTRAP_SCHEME) :]
    if not rest or any(c in rest for c in "/?#@"):
        raise ValueError(f'{text!r} is not of the form "udp://HOST:PORT"')
    return host_endpoint(rest)


def interface_name(text: str) -> str:
    """A Linux network interface name: 1 to 15 characters, no slash, colon or white space."""
    if not 0 < len(text) < IFNAMSIZ or text in {".", ".."} or any(c in text for c in "/: \t\n"):
        raise ValueError(
            f"{text!r} is not an interface name (1 to {IFNAMSIZ - 1} characters, no '/', ':' or spaces)"
        )
    return text


def format_endpoint(endpoint: Endpoint) -> str:
    """The inverse of :func:`ip_endpoint` / :func:`host_endpoint` (IPv6 in brackets)."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
