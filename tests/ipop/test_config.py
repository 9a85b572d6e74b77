"""The configuration file: defaults, refusals that name file/section/key, secret files, the example."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.config import (
    ConfigError,
    IpopConfig,
    NetworkConfig,
    NodeConfig,
    OverlayOptions,
    overlay_tuning_keys,
    parse_config,
)
from ipop.configfile import load_config, resolve_bootstrap
from ipop.confvalues import format_endpoint, host_endpoint, ip_endpoint
from overlay import OverlayConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "bootstrap.toml"
SECRET = "0123456789abcdef-secret"
BASE = f'[overlay]\nsecret = "{SECRET}"\nbootstrap = []\n'
SOURCE = Path("/etc/ipop/test.toml")


def no_files(path: Path) -> bytes:
    raise FileNotFoundError(2, "No such file or directory", str(path))


def parse(text: str, hostname: str = "host1", read_file=no_files) -> IpopConfig:  # type: ignore[no-untyped-def]
    return parse_config(text.encode(), SOURCE, hostname=hostname, read_file=read_file, label="test.toml")


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- defaults --------------------------------------------------------------------------------------


def test_minimal_file_gives_every_default() -> None:
    config = parse(BASE)
    assert config.source == SOURCE
    assert config.node == NodeConfig(
        name="host1", state_dir=Path("/var/lib/ipop/host1"), listen=("0.0.0.0", 5800), log_level="info"
    )
    assert config.overlay == OverlayConfig(realm="ipop", secret=SECRET.encode(), bootstrap=())
    assert config.overlay_options == OverlayOptions("aes-256-gcm", (), True)
    assert config.overlay_options.suite == 1
    assert config.network is None


def test_empty_network_section_gives_network_defaults() -> None:
    network = parse(BASE + "[network]\n").network
    assert network == NetworkConfig(
        namespace="default",
        mode="interface",
        device="ipop0",
        subnet=ipaddress.IPv4Network("10.250.0.0/16"),
        domain="ipop",
        lease_seconds=3600,
        mtu=None,
        dns_upstream=(),
    )


def test_name_defaults_to_first_label_of_host_name_in_lower_case() -> None:
    config = parse(BASE, hostname="Alice.Example.COM")
    assert config.node.name == "alice"
    assert config.node.state_dir == Path("/var/lib/ipop/alice")


def test_host_name_that_is_no_dns_label_asks_for_a_name() -> None:
    with pytest.raises(ConfigError, match=r"^test\.toml: \[node\] name: not given, and the host name"):
        parse(BASE, hostname="under_score")
    assert parse("[node]\nname = 'ok'\n" + BASE, hostname="under_score").node.name == "ok"


def test_every_value_given() -> None:
    config = parse(
        """
        [node]
        name = "Bob"
        state_dir = "state/bob"
        listen = "[::]:0"
        log_level = "debug"
        [overlay]
        realm = "lab"
        secret = "0123456789abcdef"
        bootstrap = ["udp://192.0.2.1:5800", "udp://[2001:db8::1]:6000", "udp://Boot.Example.net:5800"]
        cipher = "chacha20-poly1305"
        stun_servers = ["stun.example.net", "192.0.2.9:3479"]
        lan_discovery = false
        near_per_side = 3
        keepalive_s = 15
        rekey_s = 60.5
        [network]
        namespace = "lab-net"
        device = "vpn7"
        subnet = "10.99.0.0/24"
        domain = "Corp.Example."
        lease_seconds = 120
        mtu = 1280
        dns_upstream = ["192.0.2.53", "[2001:db8::53]:5353"]
        """
    )
    assert config.node == NodeConfig("bob", Path("/etc/ipop/state/bob"), ("::", 0), "debug")
    assert config.overlay.realm == "lab"
    assert config.overlay.bootstrap == (
        ("192.0.2.1", 5800),
        ("2001:db8::1", 6000),
        ("boot.example.net", 5800),
    )
    assert (config.overlay.near_per_side, config.overlay.keepalive_s, config.overlay.rekey_s) == (
        3,
        15.0,
        60.5,
    )
    assert isinstance(config.overlay.keepalive_s, float)
    assert config.overlay_options == OverlayOptions(
        "chacha20-poly1305", (("stun.example.net", 3478), ("192.0.2.9", 3479)), False
    )
    assert config.overlay_options.suite == 2
    assert config.network == NetworkConfig(
        "lab-net",
        "interface",
        "vpn7",
        ipaddress.IPv4Network("10.99.0.0/24"),
        "corp.example",
        120,
        1280,
        (("192.0.2.53", 53), ("2001:db8::53", 5353)),
    )


def test_absolute_state_dir_stays_absolute() -> None:
    config = parse("[node]\nstate_dir = '/srv/ipop/x'\n" + BASE)
    assert config.node.state_dir == Path("/srv/ipop/x")


# -- refusals --------------------------------------------------------------------------------------

NET = BASE + "[network]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[nodes]\n" + BASE, "test.toml: unknown section [nodes] (did you mean 'node'?)"),
        ("debug = true\n" + BASE, "test.toml: unknown key 'debug'"),
        ("node = 3\n" + BASE, "test.toml: node: must be a section [node]"),
        ("[node]\nnmae = 'x'\n" + BASE, "test.toml: [node] nmae: unknown key (did you mean 'name'?)"),
        ("[node]\nname = 'a_b'\n" + BASE, "test.toml: [node] name: 'a_b' is not a DNS label"),
        ("[node]\nname = 7\n" + BASE, "test.toml: [node] name: 7 is not a string"),
        ("[node]\nlisten = '0.0.0.0'\n" + BASE, "test.toml: [node] listen: '0.0.0.0' has no port"),
        ("[node]\nlisten = 'any:5800'\n" + BASE, "test.toml: [node] listen: 'any:5800': 'any' is not an IP"),
        (
            "[node]\nlisten = '0.0.0.0:70000'\n" + BASE,
            "test.toml: [node] listen: port 70000 is not in 0..65535",
        ),
        ("[node]\nlisten = '::1:80'\n" + BASE, "test.toml: [node] listen: '::1:80' has no port"),
        ("[node]\nlog_level = 'loud'\n" + BASE, "test.toml: [node] log_level: 'loud' is not one of"),
        ("[node]\nstate_dir = ''\n" + BASE, "test.toml: [node] state_dir: '' is not a path"),
        ("[overlay]\nbootstrap = []\n", "test.toml: [overlay] secret: required"),
        (f"[overlay]\nsecret = '{SECRET}'\n", "test.toml: [overlay] bootstrap: required"),
        (
            "[overlay]\nsecret = 'short'\nbootstrap = []\n",
            "test.toml: [overlay] secret: the secret has 5 bytes",
        ),
        (BASE + "secret_file = 'f'\n", "test.toml: [overlay] secret_file: give either secret or secret_file"),
        (BASE + "realm = ''\n", "test.toml: [overlay] realm: '' must be 1 to 64 printable characters"),
        (
            f"[overlay]\nsecret = '{SECRET}'\nbootstrap = ['tcp://a:1']\n",
            "test.toml: [overlay] bootstrap[0]: 'tcp://a:1' is not of the form \"udp://HOST:PORT\"",
        ),
        (
            f"[overlay]\nsecret = '{SECRET}'\nbootstrap = ['udp://1.2.3.4:1', 'udp://a b:1']\n",
            "test.toml: [overlay] bootstrap[1]: 'a b:1': 'a b' is neither an IP address nor a host name",
        ),
        (
            f"[overlay]\nsecret = '{SECRET}'\nbootstrap = ['udp://h:0']\n",
            "test.toml: [overlay] bootstrap[0]: port 0 is not in 1..65535",
        ),
        (
            f"[overlay]\nsecret = '{SECRET}'\nbootstrap = 'udp://h:1'\n",
            "test.toml: [overlay] bootstrap: 'udp://h:1' is not a list",
        ),
        (
            f"[overlay]\nsecret = '{SECRET}'\nbootstrap = [1]\n",
            "test.toml: [overlay] bootstrap[0]: 1 is not a string",
        ),
        (BASE + "cipher = 'rot13'\n", "test.toml: [overlay] cipher: 'rot13' is not one of"),
        (BASE + "stun_servers = ['[::1']\n", "test.toml: [overlay] stun_servers[0]: '[::1': a bracketed"),
        (BASE + "lan_discovery = 1\n", "test.toml: [overlay] lan_discovery: 1 is not true or false"),
        (BASE + "keepalive_s = 40\n", "test.toml: [overlay] keepalive_s: keepalive_s must be between"),
        (BASE + "keepalive_s = -1\n", "test.toml: [overlay] keepalive_s: -1.0 must be a positive number"),
        (BASE + "keepalive_s = nan\n", "test.toml: [overlay] keepalive_s: nan must be a positive number"),
        (BASE + "hop_limit = true\n", "test.toml: [overlay] hop_limit: True is not an integer"),
        (BASE + "hop_limit = 2.5\n", "test.toml: [overlay] hop_limit: 2.5 is not an integer"),
        (BASE + "max_links = -3\n", "test.toml: [overlay] max_links: -3 must not be negative"),
        (
            BASE + "near_per_side = 0\n",
            "test.toml: [overlay] near_per_side: near_per_side must be at least 1",
        ),
        (BASE + "secrets = 'x'\n", "test.toml: [overlay] secrets: unknown key (did you mean 'secret'?)"),
        (
            NET + "subnet = '10.250.0.0/33'\n",
            "test.toml: [network] subnet: '10.250.0.0/33' is not an IPv4 network",
        ),
        (NET + "subnet = 'fd00::/64'\n", "test.toml: [network] subnet: 'fd00::/64' is not an IPv4 network"),
        (
            NET + "subnet = '10.250.0.1/16'\n",
            "[network] subnet: '10.250.0.1/16' has host bits set (the network",
        ),
        (NET + "subnet = '10.0.0.0/31'\n", "test.toml: [network] subnet: '10.0.0.0/31': the prefix length"),
        (NET + "mode = 'router'\n", "test.toml: [network] mode: 'router' is not supported yet"),
        (NET + "mode = 'hybrid'\n", "test.toml: [network] mode: 'hybrid' is not supported yet"),
        (NET + "mode = 'bridge'\n", "test.toml: [network] mode: 'bridge' is not a mode"),
        (
            NET + "device = 'a-very-long-name0'\n",
            "test.toml: [network] device: 'a-very-long-name0' is not an",
        ),
        (NET + "device = 'a/b'\n", "test.toml: [network] device: 'a/b' is not an interface name"),
        (NET + "domain = 'bad..name'\n", "test.toml: [network] domain: 'bad..name' is not a DNS name"),
        (NET + "namespace = 'a:b'\n", "test.toml: [network] namespace: 'a:b' must be 1 to 64 letters"),
        (NET + "lease_seconds = 10\n", "test.toml: [network] lease_seconds: 10 is not in 60..604800"),
        (NET + "mtu = 100\n", "test.toml: [network] mtu: 100 is not in 576..65000"),
        (NET + "mtu = 70000\n", "test.toml: [network] mtu: 70000 is not in 576..65000"),
        (
            NET + "dns_upstream = ['dns.google']\n",
            "[network] dns_upstream[0]: 'dns.google': 'dns.google' is not",
        ),
        (NET + "dns_upstream = '1.1.1.1'\n", "test.toml: [network] dns_upstream: '1.1.1.1' is not a list"),
        (NET + "gateway = '10.250.0.1'\n", "test.toml: [network] gateway: unknown key; known keys are"),
        (BASE + "bootstrap = []\n", "test.toml: not valid TOML"),
        ("[network\n", "test.toml: not valid TOML"),
    ],
)
def test_refusal_names_file_section_and_key(text: str, expected: str) -> None:
    assert expected in refused(text)


def test_not_utf8_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^test\.toml: not UTF-8"):
        parse_config(b"\xff\xfe", SOURCE, hostname="h", read_file=no_files, label="test.toml")


def test_too_many_bootstrap_entries_are_refused() -> None:
    many = ", ".join(f"'udp://10.0.0.{i}:1'" for i in range(65))
    assert "test.toml: [overlay] bootstrap: 65 entries; at most 64" in refused(
        f"[overlay]\nsecret = '{SECRET}'\nbootstrap = [{many}]\n"
    )


def test_label_defaults_to_the_source_path() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/ipop/test\.toml: \[overlay\] secret: required"):
        parse_config(b"[overlay]\nbootstrap=[]\n", SOURCE, hostname="h", read_file=no_files)


# -- secret_file -----------------------------------------------------------------------------------


def test_secret_file_is_relative_to_the_config_file_and_loses_its_newline() -> None:
    asked: list[Path] = []

    def read(path: Path) -> bytes:
        asked.append(path)
        return b"a-secret-of-enough-bytes\n"

    config = parse("[overlay]\nsecret_file = 'keys/net.secret'\nbootstrap = []\n", read_file=read)
    assert asked == [Path("/etc/ipop/keys/net.secret")]
    assert config.overlay.secret == b"a-secret-of-enough-bytes"


def test_secret_file_absolute_path_is_used_as_is() -> None:
    asked: list[Path] = []

    def read(path: Path) -> bytes:
        asked.append(path)
        return bytes(range(32))

    config = parse("[overlay]\nsecret_file = '/run/s'\nbootstrap = []\n", read_file=read)
    assert asked == [Path("/run/s")]
    assert config.overlay.secret == bytes(range(32))


def test_missing_or_short_secret_file_names_the_key() -> None:
    text = "[overlay]\nsecret_file = 'nope'\nbootstrap = []\n"
    with pytest.raises(
        ConfigError, match=r"^test\.toml: \[overlay\] secret_file: cannot read '/etc/ipop/nope'"
    ):
        parse(text)
    with pytest.raises(ConfigError, match=r"\[overlay\] secret_file: the secret has 3 bytes"):
        parse(text, read_file=lambda _p: b"abc\n")


def test_load_config_reads_files_from_disk(tmp_path: Path) -> None:
    (tmp_path / "net.secret").write_bytes(b"0123456789abcdef0123\n")
    path = tmp_path / "node.toml"
    path.write_text(
        "[node]\nname = 'disk'\nstate_dir = 'st'\n[overlay]\nsecret_file = 'net.secret'\nbootstrap = []\n"
    )
    config = load_config(path)
    assert config.overlay.secret == b"0123456789abcdef0123"
    assert config.node.state_dir == tmp_path / "st"
    assert config.source == path


def test_load_config_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read: No such file or directory$"):
        load_config(missing)


# -- the shipped example ---------------------------------------------------------------------------

DEFAULT_LINE = re.compile(r"^# (\w+) = (.*)$", re.MULTILINE)


def test_example_bootstrap_toml_parses() -> None:
    config = load_config(EXAMPLE, hostname="alice")
    assert config.node.name == "alice"
    assert config.overlay.bootstrap == ()
    assert config.network == NetworkConfig()


def test_example_documents_the_true_defaults() -> None:
    """Uncommenting every `# key = value` line of the example changes nothing: what the example says a
    default is, is the default."""
    text = EXAMPLE.read_text()
    assert len(DEFAULT_LINE.findall(text)) >= 25
    uncommented = DEFAULT_LINE.sub(r"\1 = \2", text)
    as_shipped = parse_config(text.encode(), EXAMPLE, hostname="alice", read_file=no_files)
    with_defaults = parse_config(uncommented.encode(), EXAMPLE, hostname="alice", read_file=no_files)
    assert with_defaults == as_shipped


def test_example_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = {f.name for cls in (NodeConfig, OverlayOptions, NetworkConfig) for f in dataclasses.fields(cls)}
    keys |= {"realm", "secret", "secret_file", "bootstrap", *overlay_tuning_keys()}
    missing = sorted(k for k in keys if not re.search(rf"^#? ?{k}:? ", text, re.MULTILINE))
    assert not missing, f"bootstrap.toml does not document {missing}"


# -- value parsers ---------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.ip_addresses(), st.integers(1, 65535))
def test_endpoints_round_trip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    text = format_endpoint((str(ip), port))
    assert ip_endpoint(text) == (str(ip), port)
    assert host_endpoint(text) == (str(ip), port)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_config_error(data: bytes) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(data, SOURCE, hostname="h", read_file=no_files)


_KEYS = ["name", "listen", "secret", "bootstrap", "subnet", "mtu", "keepalive_s", "dns_upstream", "mode"]
_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=30),
    st.lists(st.text(max_size=20), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["node", "overlay", "network"]), st.dictionaries(st.sampled_from(_KEYS), _VALUES)
    )
)
def test_random_documents_raise_only_config_error(doc: dict[str, dict[str, object]]) -> None:
    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, float) and math.isnan(value):
                lines.append(f"{key} = nan")
            elif isinstance(value, float) and value in (float("inf"), float("-inf")):
                lines.append(f"{key} = {'-' if value < 0 else ''}inf")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    with contextlib.suppress(ConfigError):
        parse("\n".join(lines) + "\n")


async def test_resolve_bootstrap_keeps_literals_and_resolves_names() -> None:
    resolved, failures = await resolve_bootstrap(
        (("192.0.2.1", 5800), ("localhost", 5801), ("192.0.2.1", 5800))
    )
    assert failures == {}
    assert resolved[0] == ("192.0.2.1", 5800)
    assert ("127.0.0.1", 5801) in resolved
    assert resolved.count(("192.0.2.1", 5800)) == 1
