"""The TAP device for real, inside a lab namespace: the kernel's frames come out of ``read_many``, the
frames we write go into the kernel, MAC and MTU are as configured, and the MAC survives a re-open."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import select
import struct
from pathlib import Path

import pytest

from ipop.state import StateDir, format_mac
from ipop.tap import TapDevice, TapError, TapPort
from tests.ipop.nsenter import in_netns
from tests.netns import Lab, wait_for

pytestmark = pytest.mark.system

ETH_ARP, ETH_IP = 0x0806, 0x0800
OUR_IP, PEER_IP = "10.77.0.1", "10.77.0.2"
PEER_MAC = bytes.fromhex("020000007702")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_request_for(frame: bytes, target: str) -> bool:
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_ARP:
        return False
    op = struct.unpack_from("!H", frame, 20)[0]
    return op == 1 and frame[38:42] == ipaddress.IPv4Address(target).packed


def arp_reply(our_mac: bytes) -> bytes:
    eth = our_mac + PEER_MAC + struct.pack("!H", ETH_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_IP, 6, 4, 2)
    arp += PEER_MAC + ipaddress.IPv4Address(PEER_IP).packed + our_mac + ipaddress.IPv4Address(OUR_IP).packed
    return eth + arp


def echo_request_to(frame: bytes, target: str) -> bool:
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_IP:
        return False
    ihl = (frame[14] & 0x0F) * 4
    return frame[23] == 1 and frame[30:34] == ipaddress.IPv4Address(target).packed and frame[14 + ihl] == 8


def echo_reply(request: bytes) -> bytes:
    ihl = (request[14] & 0x0F) * 4
    ip = bytearray(request[14 : 14 + ihl])
    icmp = bytearray(request[14 + ihl :])
    ip[12:16], ip[16:20] = request[30:34], request[26:30]
    ip[8] = 64
    ip[10:12] = b"\0\0"
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    icmp[0] = 0
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    return request[6:12] + request[0:6] + request[12:14] + bytes(ip) + bytes(icmp)


def link_info(lab: Lab, ns: str, dev: str) -> dict[str, object]:
    info: dict[str, object] = json.loads(lab.ip(ns, "-j", "link", "show", dev))[0]
    return info


def wait_frame(tap: TapDevice, match: object, what: str) -> bytes:
    seen: list[bytes] = []

    def poll() -> bytes | None:
        select.select([tap.fileno()], [], [], 0.2)
        for frame in tap.read_many(16):
            seen.append(frame)
            if match(frame):  # type: ignore[operator]
                return frame
        return None

    return wait_for(poll, 10, what)


def test_kernel_frames_come_out_and_written_frames_go_in(netlab: Lab, tmp_path: Path) -> None:
    ns = netlab.netns("tap")
    with StateDir(tmp_path / "state") as state:
        mac = state.tap_mac()
    with in_netns(ns):
        tap = TapDevice.open("ipop0", mtu=1400, mac=mac)
    try:
        info = link_info(netlab, ns, "ipop0")
        assert info["mtu"] == 1400
        assert info["address"] == format_mac(mac)
        assert "UP" in info["flags"]  # type: ignore[operator]
        netlab.addr(ns, "ipop0", f"{OUR_IP}/24")
        ping = netlab.start("ping", ["ping", "-c1", "-W10", PEER_IP], ns=ns)

        request = wait_frame(tap, lambda f: arp_request_for(f, PEER_IP), "the kernel's ARP request")
        assert request[6:12] == mac  # sent from our configured address
        assert tap.write(arp_reply(mac))

        echo = wait_frame(tap, lambda f: echo_request_to(f, PEER_IP), "ping's echo request")
        assert echo[0:6] == PEER_MAC  # the kernel used the neighbour entry our reply made
        assert tap.write(echo_reply(echo))
        wait_for(lambda: not ping.alive(), 10, "ping to finish")
        assert ping.popen.returncode == 0, ping.stdout() + ping.stderr()
        assert "1 received" in ping.stdout()
        neigh = netlab.ip(ns, "neigh", "show", PEER_IP, "dev", "ipop0")
        assert format_mac(PEER_MAC) in neigh
    finally:
        tap.close()


def test_refused_writes_are_counted_not_raised(netlab: Lab, tmp_path: Path) -> None:
    ns = netlab.netns("tapw")
    with in_netns(ns):
        tap = TapDevice.open("ipop0", mtu=1500, mac=bytes.fromhex("020000000001"))
    try:
        assert tap.write(b"\x01\x02") is False
        assert tap.counters["write_refused"] == 1
    finally:
        tap.close()


def test_same_mac_after_reopen_and_device_gone_after_close(netlab: Lab, tmp_path: Path) -> None:
    ns = netlab.netns("tapm")
    macs = []
    for _ in range(2):
        with StateDir(tmp_path / "state") as state:
            mac = state.tap_mac()
        with in_netns(ns):
            tap = TapDevice.open("ipop7", mtu=9000, mac=mac)
        info = link_info(netlab, ns, "ipop7")
        macs.append(info["address"])
        assert info["mtu"] == 9000
        tap.close()
        wait_for(
            lambda: "ipop7" not in netlab.ip(ns, "-br", "link"),
            10,
            "the device to disappear after close",
        )
    assert macs[0] == macs[1] == format_mac(mac)


def test_a_busy_name_is_a_clear_error(netlab: Lab) -> None:
    ns = netlab.netns("tapb")
    with in_netns(ns):
        tap = TapDevice.open("ipop0", mtu=1500, mac=bytes.fromhex("020000000002"))
        try:
            with pytest.raises(TapError, match=r"cannot create TAP device ipop0: .*another process holds"):
                TapDevice.open("ipop0", mtu=1500, mac=bytes.fromhex("020000000003"))
            with pytest.raises(TapError, match=r"cannot create TAP device lo: .*existing device of another"):
                TapDevice.open("lo", mtu=1500, mac=bytes.fromhex("020000000003"))
        finally:
            tap.close()


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.arp_seen = asyncio.Event()

    def tap_frames(self, frames: list[bytes]) -> None:
        self.batches.append(frames)
        if any(arp_request_for(f, PEER_IP) for f in frames):
            self.arp_seen.set()


async def test_tap_port_hands_batches_to_its_handler(netlab: Lab) -> None:
    ns = netlab.netns("tapp")
    recorder = Recorder()
    with in_netns(ns):
        port = TapPort("ipop0", mtu=1500, mac=bytes.fromhex("020000000004"), handler=recorder)
    task = asyncio.create_task(port.run())
    try:
        netlab.addr(ns, "ipop0", f"{OUR_IP}/24")
        ping = netlab.start("ping", ["ping", "-c1", "-W10", PEER_IP], ns=ns)
        async with asyncio.timeout(10):
            await recorder.arp_seen.wait()
        assert port.send(arp_reply(port.device.mac))
        status = port.status()
        assert status["device"] == "ipop0"
        assert status["rx_frames"] == sum(len(b) for b in recorder.batches) >= 1
        assert status["tx_frames"] == 1
        ping.stop()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    wait_for(lambda: "ipop0" not in netlab.ip(ns, "-br", "link"), 10, "the device to go with the port")
