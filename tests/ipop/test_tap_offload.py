"""The TAP device with IFF_VNET_HDR and offloads, for real in a lab namespace: the kernel reports the
offloads on, frames come with a virtio-net header (TSO super-frames included), and where the kernel
refuses a feature the device falls back to fewer, or to a plain device, and says so."""

from __future__ import annotations

import errno
import fcntl
import logging
from typing import Any

import pytest

from ipop import tap as tapmod
from ipop.tap import TUN_F_USO4, TUNSETOFFLOAD, TUNSETVNETHDRSZ, TapDevice
from tests.ipop.nsenter import in_netns
from tests.netns import Lab
from tests.vnproto.vnetlab import TapPair, expected, unchanged
from vnproto import VNET_HDR_LEN, GsoType, VirtioNetHdr

pytestmark = pytest.mark.system

MAC = bytes.fromhex("020000007703")


def features(lab: Lab, ns: str, dev: str) -> dict[str, str]:
    out = lab.sh(ns, "ethtool", "-k", dev).stdout
    return dict(line.strip().split(": ", 1)[:2] for line in out.splitlines()[1:] if ": " in line)


def test_offloads_on_and_super_frames_come_with_headers(netlab: Lab) -> None:
    pair = TapPair(netlab, offload_a=True, offload_b=True)
    try:
        tap = pair.tap_a
        assert tap.frame_offset == VNET_HDR_LEN
        assert {"csum", "tso4", "tso6"} <= set(tap.offload_names)
        feats = features(netlab, pair.a, "vn0")
        assert feats["tcp-segmentation-offload"].startswith("on")
        assert feats["tx-checksumming"].startswith("on")
        record: list[tuple[str, bytes]] = []
        got, counts = pair.transfer(unchanged, unchanged, 500_000, record=record)
        assert got == expected(500_000) and counts["refused"] == 0
        headers = [VirtioNetHdr.decode(f, len(f) - VNET_HDR_LEN) for k, f in record if k == "ab"]
        big = [h for h in headers if h.gso is GsoType.TCPV4]
        assert big, "no TSO super-frame came out of the TAP"
        assert max(len(f) for k, f in record if k == "ab") > 10_000
    finally:
        pair.close()


def test_plain_device_has_no_header(netlab: Lab) -> None:
    ns = netlab.netns("plain")
    with in_netns(ns):
        tap = TapDevice.open("vn1", mtu=1500, mac=MAC)
    try:
        assert tap.offloads == 0 and tap.frame_offset == 0 and tap.offload_names == []
        assert features(netlab, ns, "vn1")["tcp-segmentation-offload"].startswith("off")
    finally:
        tap.close()


def test_refused_features_fall_back_and_are_logged(
    netlab: Lab, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = fcntl.ioctl

    def older_kernel(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == TUNSETOFFLOAD and arg & TUN_F_USO4:
            raise OSError(errno.EINVAL, "Invalid argument")  # as a kernel before 6.2 answers
        return real(fd, request, arg, *rest)

    monkeypatch.setattr(tapmod.fcntl, "ioctl", older_kernel)
    ns = netlab.netns("old")
    with caplog.at_level(logging.INFO, logger="ipop.tap"), in_netns(ns):
        tap = TapDevice.open("vn2", mtu=1500, mac=MAC, offload=True)
    try:
        assert tap.offload_names == ["csum", "tso4", "tso6", "tso_ecn"]
        assert tap.frame_offset == VNET_HDR_LEN
        assert "does not offer uso4, uso6" in caplog.text
    finally:
        tap.close()


def test_refused_header_gives_a_plain_device(
    netlab: Lab, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = fcntl.ioctl

    def no_vnet(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == TUNSETVNETHDRSZ:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, request, arg, *rest)

    monkeypatch.setattr(tapmod.fcntl, "ioctl", no_vnet)
    ns = netlab.netns("novnet")
    with caplog.at_level(logging.INFO, logger="ipop.tap"), in_netns(ns):
        tap = TapDevice.open("vn3", mtu=1400, mac=MAC, offload=True)
    try:
        assert tap.offloads == 0 and tap.frame_offset == 0
        assert "running without offloads" in caplog.text
        assert features(netlab, ns, "vn3")["tcp-segmentation-offload"].startswith("off")
    finally:
        tap.close()
