"""Pure. The node's configuration: one TOML file read once into frozen dataclasses.

The file has three sections. ``[node]`` says who this process is and where it keeps its state,
``[overlay]`` which overlay it joins (it fills the overlay's own :class:`overlay.OverlayConfig`), and
``[network]`` which virtual network it serves through a TAP device; without ``[network]`` the node is a
pure overlay member (a bootstrap node, say). The example ``bootstrap.toml`` documents every key.

Everything is checked here, at start: an unknown section or key, a wrong type or a bad value raises
:class:`ConfigError` with one line that names the file, the section and the key, e.g.
``bootstrap.toml: [network] subnet: '10.250.0.0/33' is not an IPv4 network``. A node that starts has a
configuration that makes sense; nothing deeper down needs to second-guess it.

This module is pure: it parses bytes. The host name (the default node name) and the contents of
``secret_file`` come in from the caller; ``ipop.configfile`` is the thin I/O layer that reads the
files, and it resolves bootstrap host names at start.
"""

from __future__ import annotations

import ipaddress
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from overlay import Endpoint, OverlayConfig

from . import confvalues as cv
from .conftable import ConfigError, Section, did_you_mean, known

__all__ = [
    "ConfigError",
    "IpopConfig",
    "NetworkConfig",
    "NodeConfig",
    "OverlayOptions",
    "ReadFile",
    "overlay_tuning_keys",
    "parse_config",
]

DEFAULT_PORT = 5800
"""The overlay's UDP port when ``[node] listen`` is not given; any free port works, a fixed default
lets bootstrap URLs of other nodes be written without looking it up."""

DEFAULT_STATE_ROOT = Path("/var/lib/ipop")
"""Parent of the default state directory ``/var/lib/ipop/<name>`` (the FHS place for service state)."""

STUN_PORT = 3478
"""Default port of a STUN server given without one (RFC 8489, section 18.6)."""

DNS_PORT = 53

MIN_SECRET_BYTES = 16
"""The network secret keys every link's admission check; 16 bytes (128 bits) is the least that is not
guessable, and the overlay refuses less too."""

LOG_LEVELS = ("debug", "info", "warning", "error")

CIPHERS = {"aes-256-gcm": 1, "chacha20-poly1305": 2}
"""Cipher names in the file -> the link handshake's suite number (``overlay`` link framing: suite 1 is
AES-256-GCM, fastest where the CPU has AES instructions; suite 2 is ChaCha20-Poly1305, fastest without)."""

DEFAULT_SUBNET = ipaddress.IPv4Network("10.250.0.0/16")
"""A /16 inside 10/8 that home and office networks rarely use (they favour 10.0.x and 10.1.x), with room
for 65,000 members."""

MODES_LATER = ("router", "hybrid")
"""Deployment modes described in the design but not built yet; refused with a clear message."""

MIN_PREFIX, MAX_PREFIX = 8, 30
"""A virtual subnet from /8 (16 million addresses, far beyond any overlay) to /30 (the DNS address and
one member: the smallest network that still carries traffic)."""

MIN_MTU, MAX_MTU = 576, 65000
"""576 is the smallest datagram every IPv4 host must accept (RFC 791); 65000 stays under the 65535 of
an IPv4 total length with room for the overlay's headers."""

MIN_LEASE, MAX_LEASE = 60, 7 * 86400
"""DHCP clients renew at half the lease; under a minute they would renew constantly, and above a week
a stopped node's address would stay taken for too long."""

_OVERLAY_KEYS_HERE = ("realm", "secret", "bootstrap")
"""OverlayConfig fields filled by named keys of their own (secret from ``secret`` or ``secret_file``)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    """This node's name: its log prefix and its DNS name (``NAME.<domain>``). Default: the first label
    of the machine's host name, lower-cased."""

    state_dir: Path
    """Where the node keeps its identity key, TAP MAC address, leases, lock and control socket.
    Default ``/var/lib/ipop/<name>``; a relative path is relative to the configuration file."""

    listen: Endpoint = ("0.0.0.0", DEFAULT_PORT)
    """UDP address and port of the overlay socket (``"0.0.0.0:5800"``, ``"[::]:5800"``; port 0 lets
    the system choose)."""

    log_level: str = "info"
    """One of debug, info, warning, error."""


@dataclass(frozen=True, slots=True)
class OverlayOptions:
    """The ``[overlay]`` keys that configure this node's links rather than the overlay core."""

    cipher: str = "aes-256-gcm"
    """AEAD for links this node initiates: ``aes-256-gcm`` or ``chacha20-poly1305``."""

    stun_servers: tuple[Endpoint, ...] = ()
    """STUN servers (host, port) asked for this node's public address; hosts may be DNS names. Empty:
    the node learns its reflexive address from its peers alone."""

    lan_discovery: bool = True
    """Announce and listen for other members on the local network, so that nodes behind one NAT link
    directly over the LAN."""

    @property
    def suite(self) -> int:
        """The link handshake's suite number for ``cipher``."""
        return CIPHERS[self.cipher]


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    namespace: str = "default"
    """The virtual network this node serves; one overlay carries many, isolated from each other."""

    mode: str = "interface"
    """Deployment mode. ``interface``: the machine running the node is the member, through the TAP
    device. (``router`` and ``hybrid`` come later.)"""

    device: str = "ipop0"
    """Name of the TAP device the node creates."""

    subnet: ipaddress.IPv4Network = DEFAULT_SUBNET
    """The virtual IPv4 network; its first usable address is the node's DNS server."""

    domain: str = "ipop"
    """DNS domain of members: ``NAME.<domain>``; given to DHCP clients as their search domain."""

    lease_seconds: int = 3600
    """DHCP lease time; a stopped node's address is free again this long after its last renewal."""

    mtu: int | None = None
    """MTU of the TAP device and of DHCP clients (option 26). None: computed by the node from the
    underlay MTU so that no encapsulated packet is ever fragmented."""

    dns_upstream: tuple[Endpoint, ...] = ()
    """DNS servers for names outside ``domain``. Empty: the host's own resolvers."""

    offload: bool = True
    """Open the TAP device with the virtio-net header and checksum/segmentation offloads, so that the
    kernel hands over (and takes back) TCP super-frames of up to 64 KiB: many times the throughput.
    False: a plain device, one frame per MTU-sized packet (also the fallback where the kernel refuses)."""


@dataclass(frozen=True, slots=True)
class IpopConfig:
    source: Path
    """The file this was read from (relative paths in it are relative to its directory)."""

    node: NodeConfig
    """The ``[node]`` section."""

    overlay: OverlayConfig
    """The ``[overlay]`` section as the overlay core takes it. ``bootstrap`` holds the entries as
    written: a host may be a DNS name. The runtime resolves them at start (``NodeContext.bootstrap``,
    through ``ipop.configfile.resolve_bootstrap``)."""

    network: NetworkConfig | None
    """The ``[network]`` section; None makes a pure overlay node with no TAP device."""

    overlay_options: OverlayOptions = field(default_factory=OverlayOptions)
    """The ``[overlay]`` keys about this node's links (cipher, STUN, LAN discovery)."""


ReadFile = Callable[[Path], bytes]
"""Reads a file named by the configuration (``secret_file``); raises OSError when it cannot."""


def parse_config(
    data: bytes, source: Path, *, hostname: str, read_file: ReadFile, label: str | None = None
) -> IpopConfig:
    """Parse a configuration file's bytes. ``source`` is its path (relative paths in the file are
    relative to ``source.parent``; pass an absolute path), ``hostname`` the machine's host name (the
    default node name), ``read_file`` reads ``secret_file``, and ``label`` names the file in messages
    (default: ``source`` as given)."""
    where = label if label is not None else str(source)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    sections = {"node", "overlay", "network"}
    for key, value in doc.items():
        if key in sections and not isinstance(value, dict):
            raise ConfigError(f"{where}: {key}: must be a section [{key}], not a value")
        if key not in sections:
            what = f"unknown section [{key}]" if isinstance(value, dict) else f"unknown key {key!r}"
            hint = did_you_mean(key, sections)
            raise ConfigError(f"{where}: {what}{hint}; sections are {known(sections)}")
    base = source.parent
    node = _node(Section(where, "node", doc.get("node", {})), hostname, base)
    overlay, options = _overlay(Section(where, "overlay", doc.get("overlay", {})), base, read_file)
    network = _network(Section(where, "network", doc["network"])) if "network" in doc else None
    return IpopConfig(source, node, overlay, network, options)


def _node(sec: Section, hostname: str, base: Path) -> NodeConfig:
    given = sec.optional("name")
    if given is not None:
        name = sec.value("name", given, cv.dns_label)
    else:
        first = hostname.split(".", 1)[0]
        try:
            name = cv.dns_label(first)
        except ValueError:
            raise sec.error(
                "name", f"not given, and the host name {hostname!r} is not a DNS label; set [node] name"
            ) from None
    state = sec.optional("state_dir")
    state_dir = DEFAULT_STATE_ROOT / name if state is None else base / sec.value("state_dir", state, _path)
    listen_text = sec.string("listen", f"0.0.0.0:{DEFAULT_PORT}")
    listen = sec.value("listen", listen_text, lambda t: cv.ip_endpoint(t, allow_zero=True))
    level = sec.choice("log_level", "info", LOG_LEVELS)
    sec.finish()
    return NodeConfig(name, state_dir, listen, level)


def _overlay(sec: Section, base: Path, read_file: ReadFile) -> tuple[OverlayConfig, OverlayOptions]:
    realm = sec.string("realm", "ipop")
    if not realm or not realm.isprintable() or len(realm) > 64:
        raise sec.error("realm", f"{realm!r} must be 1 to 64 printable characters")
    secret = _secret(sec, base, read_file)
    if "bootstrap" not in sec.table:
        raise sec.error("bootstrap", 'required: a list of "udp://HOST:PORT" ([] starts a new overlay)')
    bootstrap = tuple(sec.each("bootstrap", sec.strings("bootstrap", []), cv.bootstrap_url))
    cipher = sec.choice("cipher", "aes-256-gcm", tuple(CIPHERS))
    stun_servers = sec.strings("stun_servers", [])
    stun = tuple(
        sec.each("stun_servers", stun_servers, lambda t: cv.host_endpoint(t, default_port=STUN_PORT))
    )
    lan = sec.boolean("lan_discovery", True)
    advanced: dict[str, Any] = {}
    for f, kind in _advanced_overlay_fields().items():
        value = sec.number(f, kind)
        if value is not None:
            advanced[f] = value
    sec.finish()
    try:
        config = OverlayConfig(realm=realm, secret=secret, bootstrap=bootstrap, **advanced)
    except ValueError as exc:
        text = str(exc)
        culprit = text.split(" ", 1)[0]
        raise sec.error(culprit if culprit in advanced else "", text) from None
    return config, OverlayOptions(cipher, stun, lan)


def _secret(sec: Section, base: Path, read_file: ReadFile) -> bytes:
    text = sec.optional("secret")
    name = sec.optional("secret_file")
    if text is not None and name is not None:
        raise sec.error("secret_file", "give either secret or secret_file, not both")
    if text is None and name is None:
        raise sec.error("secret", "required: the network secret (or secret_file, a file that holds it)")
    if text is not None:
        secret, key = text.encode("utf-8"), "secret"
    elif name is not None:
        path = base / sec.value("secret_file", name, _path)
        try:
            raw = read_file(path)
        except OSError as exc:
            raise sec.error("secret_file", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        # A file written by `openssl rand -hex 32 > f` or an editor ends with a newline that is not part
        # of the secret; stripping it on every node keeps them in agreement.
        secret, key = raw.strip(b" \t\r\n"), "secret_file"
    if len(secret) < MIN_SECRET_BYTES:
        raise sec.error(key, f"the secret has {len(secret)} bytes; it needs at least {MIN_SECRET_BYTES}")
    return secret


def _network(sec: Section) -> NetworkConfig:
    d = NetworkConfig()
    namespace = sec.string("namespace", d.namespace)
    if not namespace or len(namespace) > 64 or not all(c.isalnum() or c in "-_." for c in namespace):
        raise sec.error("namespace", f"{namespace!r} must be 1 to 64 letters, digits, '-', '_' or '.'")
    mode = sec.string("mode", d.mode)
    if mode in MODES_LATER:
        raise sec.error("mode", f'{mode!r} is not supported yet; use "interface"')
    if mode != "interface":
        raise sec.error("mode", f'{mode!r} is not a mode ("interface"; later "router", "hybrid")')
    device = sec.value("device", sec.string("device", d.device), cv.interface_name)
    subnet = sec.value("subnet", sec.string("subnet", str(d.subnet)), _subnet)
    domain = sec.value("domain", sec.string("domain", d.domain), cv.dns_name)
    lease = sec.integer("lease_seconds", d.lease_seconds, MIN_LEASE, MAX_LEASE)
    mtu = sec.integer("mtu", None, MIN_MTU, MAX_MTU) if "mtu" in sec.table else None
    upstream_text = sec.strings("dns_upstream", [])
    upstream = tuple(
        sec.each("dns_upstream", upstream_text, lambda t: cv.ip_endpoint(t, default_port=DNS_PORT))
    )
    offload = sec.boolean("offload", d.offload)
    sec.finish()
    return NetworkConfig(namespace, mode, device, subnet, domain, lease, mtu, upstream, offload)


def _subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            network = ipaddress.ip_interface(text).network
            raise ValueError(f"{text!r} has host bits set (the network is {network})") from None
        raise ValueError(f"{text!r} is not an IPv4 network") from None
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise ValueError(f"{text!r}: the prefix length must be /{MIN_PREFIX} to /{MAX_PREFIX}")
    return net


def _path(text: str) -> Path:
    if not text or "\0" in text:
        raise ValueError(f"{text!r} is not a path")
    return Path(text)


def _advanced_overlay_fields() -> dict[str, type]:
    """OverlayConfig's tuning fields (everything but realm, secret and bootstrap) with their types:
    each is a key of ``[overlay]`` of the same name, so a field added to the overlay is configurable at
    once (and ``tests/ipop`` checks that ``bootstrap.toml`` documents it)."""
    hints = typing.get_type_hints(OverlayConfig)
    return {
        f.name: hints[f.name]
        for f in fields(OverlayConfig)
        if f.name not in _OVERLAY_KEYS_HERE and hints[f.name] in (int, float, bool)
    }


def overlay_tuning_keys() -> tuple[str, ...]:
    """The advanced ``[overlay]`` keys that map onto OverlayConfig fields."""
    return tuple(_advanced_overlay_fields())
