"""The state directory: identity key, MAC address, JSON records and the lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipop.state import (
    IDENTITY_FILE,
    LOCK_FILE,
    MAC_FILE,
    StateDir,
    StateError,
    format_mac,
    parse_mac,
    random_local_mac,
)
from tests.netns import wait_for

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    with StateDir(tmp_path / "var" / "node") as s:
        yield s


def test_prepare_creates_a_private_directory_with_parents(tmp_path: Path) -> None:
    s = StateDir(tmp_path / "a" / "b")
    s.prepare()
    assert (tmp_path / "a" / "b").is_dir()
    assert mode(tmp_path / "a" / "b") == 0o700


def test_prepare_tightens_an_open_directory(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o755)
    StateDir(d).prepare()
    assert mode(d) == 0o700


def test_prepare_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StateError, match="is not a directory"):
        StateDir(f).prepare()


def test_identity_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "node"
    with StateDir(path) as s:
        first = s.identity()
    key = path / IDENTITY_FILE
    assert mode(key) == 0o600
    assert key.read_bytes() == first.private_bytes()
    assert len(key.read_bytes()) == 32
    with StateDir(path) as s:
        again = s.identity()
    assert again.address == first.address
    assert sorted(p.name for p in path.iterdir()) == [IDENTITY_FILE, LOCK_FILE]


def test_two_directories_get_different_identities(tmp_path: Path) -> None:
    with StateDir(tmp_path / "a") as a, StateDir(tmp_path / "b") as b:
        assert a.identity().address != b.identity().address


def test_identity_readable_by_others_is_refused(state: StateDir) -> None:
    key = state.path / IDENTITY_FILE
    state.identity()
    key.chmod(0o644)
    with pytest.raises(StateError, match=r"has mode 0644; a private key must be readable by its owner only"):
        state.identity()


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_identity_of_wrong_length_is_refused(state: StateDir, size: int) -> None:
    key = state.path / IDENTITY_FILE
    key.write_bytes(b"k" * size)
    key.chmod(0o600)
    with pytest.raises(StateError, match=rf"has {size} bytes; expected 32"):
        state.identity()


def test_identity_symlink_and_directory_are_refused(state: StateDir, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(bytes(32))
    target.chmod(0o600)
    key = state.path / IDENTITY_FILE
    key.symlink_to(target)
    with pytest.raises(StateError, match="is a symbolic link"):
        state.identity()
    key.unlink()
    key.mkdir()
    with pytest.raises(StateError, match="is not a regular file"):
        state.identity()


def test_files_need_the_lock(tmp_path: Path) -> None:
    s = StateDir(tmp_path / "n")
    s.prepare()
    for use in (s.identity, s.tap_mac, lambda: s.load_json("x"), lambda: s.save_json("x", 1)):
        with pytest.raises(RuntimeError, match="lock"):
            use()


def test_mac_is_local_unicast_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "n"
    with StateDir(path) as s:
        mac = s.tap_mac()
        assert s.tap_mac() == mac
    assert len(mac) == 6
    assert mac[0] & 0x02 and not mac[0] & 0x01
    assert (path / MAC_FILE).read_text() == format_mac(mac) + "\n"
    with StateDir(path) as s:
        assert s.tap_mac() == mac


@pytest.mark.parametrize("text", ["garbage", "01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00"])
def test_bad_mac_file_is_refused(state: StateDir, text: str) -> None:
    (state.path / MAC_FILE).write_text(text + "\n")
    with pytest.raises(StateError, match="remove the file to get a new address"):
        state.tap_mac()


def test_mac_helpers() -> None:
    assert parse_mac("02:AB:cd:00:11:22\n") == bytes.fromhex("02abcd001122")
    assert random_local_mac(b"\xff" * 6) == b"\xfe" + b"\xff" * 5
    assert random_local_mac(b"\x00" * 6) == b"\x02" + b"\x00" * 5
    with pytest.raises(ValueError):
        random_local_mac(b"123")


def test_json_records_round_trip_atomically(state: StateDir) -> None:
    assert state.load_json("leases") is None
    value = {"10.250.0.7": {"mac": "02:00:00:00:00:01", "expires": 1234.5}, "n": [1, 2, 3]}
    state.save_json("leases", value)
    assert state.load_json("leases") == value
    state.save_json("leases", {"replaced": True})
    assert state.load_json("leases") == {"replaced": True}
    assert mode(state.path / "leases.json") == 0o600
    assert not [p for p in state.path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_or_misnamed_records_are_refused(state: StateDir) -> None:
    (state.path / "leases.json").write_text("{not json")
    with pytest.raises(StateError, match="is not valid JSON"):
        state.load_json("leases")
    for name in ("../x", "", "A", "a.b"):
        with pytest.raises(ValueError, match="is not a record name"):
            state.save_json(name, 1)


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    path = tmp_path / "n"
    with StateDir(path):
        with pytest.raises(StateError, match=rf"is in use by another ipop node \(pid {os.getpid()}\)"):
            StateDir(path).lock()
        assert (path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with StateDir(path) as again:
        assert again.locked


def test_lock_held_by_another_process_and_released_when_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "n"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from ipop.state import StateDir; "
            "s = StateDir(pathlib.Path(sys.argv[1])); s.prepare(); s.lock(); print('locked', flush=True); "
            "sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(StateError, match=rf"in use by another ipop node \(pid {holder.pid}\)"):
            StateDir(path).lock()
        holder.send_signal(signal.SIGKILL)  # a crash: no unlock, the kernel drops the flock
        holder.wait(10)
        s = StateDir(path)
        wait_for(lambda: _try_lock(s), 5, "the lock to be free after the holder died")
        s.unlock()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def _try_lock(s: StateDir) -> bool:
    try:
        s.lock()
    except StateError:
        return False
    return True
