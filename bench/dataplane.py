"""I/O. The data-plane benchmark of issues 5 and 7: one TCP stream between two network namespaces,
through the plain underlay, through wireguard-go, and through two ipop nodes, in one run.

Two namespaces are joined by a veth pair with the underlay MTU ``M``. The script measures, in turn:

- ``physical_gbps``: iperf3 over the veth itself;
- ``wireguard_go_gbps``: iperf3 through Debian's wireguard-go (keys from ``wg genkey``), tunnel MTU
  ``M - 80`` (WireGuard's overhead over IPv4);
- ``ipop_gbps``: iperf3 through two ipop nodes started as real processes (``python -m ipop up -c
  FILE``, each with a ``[network]`` section, so each has a TAP device); the virtual addresses are taken
  by DHCP when the node answers it, and otherwise set statically on the TAP devices;
- ``ipop_rtt_added_ms``: ping's average RTT through ipop minus through the veth;
- ``ipop_tcp_rtt_ms`` and ``wireguard_go_tcp_rtt_ms``: the iperf3 sender's mean smoothed TCP RTT
  during the run (the kernel's ``tcpi_rtt``), i.e. the latency under full load: what the queues along
  the tunnel add (bufferbloat) on top of the idle RTT;
- ``ipop_tcp_retransmits`` and ``wireguard_go_tcp_retransmits``: segments the iperf3 sender sent again
  (loss inside the tunnel), and ``ipop_socket_drops``: datagrams the kernel dropped at the ipop nodes'
  full UDP receive buffers during the run (``SO_MEMINFO``); ``tcp_congestion_control``: the
  namespaces' default, which iperf3 uses (BBR ignores loss that CUBIC halves its window for);
- ``ipop_cpu_pct``: CPU of both ipop processes during the iperf3 run, in % of one core (also per node);
- ``ipop_keepalive_lost`` and ``ipop_links_lost``: keepalive pings left unanswered, and links given up
  for silence, on both nodes during the iperf3 run (issue 7: 0 under full load);
- ``dhcp_bound_s_p50`` (udhcpc start to bound, 10 runs) and ``dns_ms_p50`` (dig of a member name,
  after one warm-up query), when the node answers DHCP and DNS.

A figure that cannot be measured (ipop nodes that do not carry traffic yet, no DHCP answer) is null,
and ``notes`` says why: nothing is estimated or faked. Everything made here carries the prefix
``dp<pid>`` and is removed at the end, also after a failure or Ctrl-C; processes are ended by the pid
recorded when they were started. Run as root: ``.venv/bin/python bench/dataplane.py --json`` (or
``python -m bench.dataplane``).

The parts: ``bench.dataplane_lab`` (namespaces, processes, iperf3 and ping), ``bench.dataplane_wireguard``
(the underlay and wireguard-go), ``bench.dataplane_ipop`` (the two ipop nodes); this module makes the
JSON report and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as ``bench/dataplane.py`` (the command): make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dataplane_ipop import IpopRun
from bench.dataplane_lab import Lab, interrupts_raise
from bench.dataplane_wireguard import WG_MTU, physical, wireguard_go


def measure(mtu: int, seconds: float) -> dict[str, Any]:
    """The JSON report of one run: every figure, null where it could not be measured."""
    lab = Lab(mtu, seconds)
    result: dict[str, Any] = {
        "underlay_mtu": mtu,
        "wireguard_go_mtu": min(WG_MTU, mtu - 80),
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "tcp_congestion_control": None,
    }
    try:
        lab.setup()
        physical_gbps, physical_rtt = physical(lab)
        wg, wg_rtt, wg_tcp_rtt = wireguard_go(lab)
        wg_retransmits = lab.last_tcp_retransmits if wg is not None else None
        result["tcp_congestion_control"] = (
            lab.run("sysctl", "-n", "net.ipv4.tcp_congestion_control", ns=lab.ns_a, check=False).strip()
            or None
        )
        ipop = IpopRun(lab).measure()
    finally:
        lab.close()
    result.update(
        physical_gbps=physical_gbps,
        wireguard_go_gbps=wg,
        ipop_gbps=ipop["ipop_gbps"],
        ipop_vs_wireguard_go=round(ipop["ipop_gbps"] / wg, 3) if ipop["ipop_gbps"] and wg else None,
        ipop_rtt_added_ms=(
            round(ipop["ipop_rtt_ms"] - physical_rtt, 3)
            if ipop["ipop_rtt_ms"] is not None and physical_rtt is not None
            else None
        ),
        ipop_cpu_pct=ipop["ipop_cpu_pct"],
        ipop_cpu_pct_per_node=ipop["ipop_cpu_pct_per_node"],
        ipop_keepalive_lost=ipop["ipop_keepalive_lost"],
        ipop_links_lost=ipop["ipop_links_lost"],
        dhcp_bound_s_p50=ipop["dhcp_bound_s_p50"],
        dns_ms_p50=ipop["dns_ms_p50"],
        physical_rtt_ms=physical_rtt,
        wireguard_go_rtt_ms=wg_rtt,
        ipop_rtt_ms=ipop["ipop_rtt_ms"],
        wireguard_go_tcp_rtt_ms=wg_tcp_rtt,
        ipop_tcp_rtt_ms=ipop["ipop_tcp_rtt_ms"],
        wireguard_go_tcp_retransmits=wg_retransmits,
        ipop_tcp_retransmits=ipop["ipop_tcp_retransmits"],
        ipop_socket_drops=ipop["ipop_socket_drops"],
        notes=lab.notes,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--underlay-mtu", type=int, default=1500, help="MTU of the veth underlay (default 1500)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run (default 5)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.dataplane needs root (network namespaces)", file=sys.stderr)
        return 2
    if not 1280 <= args.underlay_mtu <= 65535:
        parser.error("--underlay-mtu must be 1280..65535")
    try:
        with interrupts_raise():
            result = measure(args.underlay_mtu, args.seconds)
    except KeyboardInterrupt:
        print("interrupted; everything this run made was removed", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:24s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
