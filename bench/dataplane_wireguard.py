"""I/O. The reference tunnels of the data-plane benchmark (``bench.dataplane``): the plain underlay
(the veth itself) and Debian's wireguard-go (keys from ``wg genkey``), each measured in a
:class:`bench.dataplane_lab.Lab` with one iperf3 stream and ping.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.dataplane_lab import UNDERLAY_A, UNDERLAY_B, Lab, wait_until

WG_A, WG_B = "10.203.0.1", "10.203.0.2"
WG_MTU = 1420
"""wireguard-go's tunnel MTU whatever the underlay: wg-quick's default (1500 minus WireGuard's 80 bytes
over IPv4), the setting issue 7's ratios were measured with. (With a 65455-byte tunnel over a 65535
underlay it moved 2.7 Gbit/s here: that compares a jumbo-frame WireGuard, which the Internet never
carries, rather than the deployed one.)"""


def physical(lab: Lab) -> tuple[float | None, float | None]:
    """Gbit/s and ping RTT (ms) over the veth underlay itself."""
    return lab.iperf(UNDERLAY_B)[0], lab.ping_ms(UNDERLAY_B)


def wireguard_go(lab: Lab) -> tuple[float | None, float | None, float | None]:
    """Gbit/s, ping RTT (ms) and the iperf3 sender's mean TCP RTT (ms) through wireguard-go with a
    tunnel MTU of ``min(WG_MTU, M - 80)``; all None (with a note) when it is missing or carries nothing."""
    if not shutil.which("wireguard-go") or not shutil.which("wg"):
        lab.notes.append("wireguard-go or wg is not installed (Debian: wireguard-go wireguard-tools)")
        return None, None, None
    keys = {}
    for side in "ab":
        private = lab.run("wg", "genkey").strip()
        path = lab.work / f"wg-{side}.key"
        path.write_text(private + "\n")
        path.chmod(0o600)
        public = subprocess.run(
            ["wg", "pubkey"], input=private, capture_output=True, text=True
        ).stdout.strip()
        keys[side] = (path, public)
    procs = []
    # The UAPI socket /var/run/wireguard/<if>.sock is shared by all namespaces: names must be unique.
    for side, ns, peer_ip, tunnel_ip, other in (
        ("a", lab.ns_a, UNDERLAY_B, WG_A, "b"),
        ("b", lab.ns_b, UNDERLAY_A, WG_B, "a"),
    ):
        dev = f"{lab.tag}w{side}"
        env = {"WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        procs.append(lab.start(f"wireguard-go-{side}", ["wireguard-go", "-f", dev], ns, env))
        sock = Path(f"/var/run/wireguard/{dev}.sock")
        wait_until(sock.exists, 10, f"wireguard-go's socket {sock}")
        lab.run(
            "wg",
            "set",
            dev,
            "private-key",
            str(keys[side][0]),
            "listen-port",
            "51820",
            "peer",
            keys[other][1],
            "allowed-ips",
            "10.203.0.0/24",
            "endpoint",
            f"{peer_ip}:51820",
            ns=ns,
        )
        lab.run("ip", "addr", "add", f"{tunnel_ip}/24", "dev", dev, ns=ns)
        lab.run("ip", "link", "set", dev, "mtu", str(min(WG_MTU, lab.mtu - 80)), "up", ns=ns)
    try:
        if lab.ping_until(WG_B, 10) is None:
            lab.notes.append("wireguard-go carried no ping")
            return None, None, None
        gbps, _ = lab.iperf(WG_B, [p.pid for p in procs])
        return gbps, lab.ping_ms(WG_B), lab.last_tcp_rtt_ms
    finally:
        for proc in procs:
            lab.stop(proc)
