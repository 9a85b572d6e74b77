"""I/O. The node's state directory: identity key, TAP MAC address, small JSON records, the control
socket's path, and a lock so that two nodes never share one directory.

Layout (the directory is mode 0700, its files 0600)::

    identity.key   raw 32-byte Ed25519 private key; the node's overlay address derives from it
    tap.mac        the TAP device's MAC address ("02:..."), so the machine's DHCP client keeps its identity
    <name>.json    small records written atomically (the DHCP lease table, say)
    ipop.pid       the lock: flock()ed by the running node, holding its process id
    control.sock   the running node's control socket (``ipop.control``)

Files are created atomically (a temporary file, fsync, then link or rename, then fsync of the
directory), so a crash or power loss leaves either the old file or the new one, never half of one.
Everything that reads or writes state requires the lock: misuse raises loudly.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat
from pathlib import Path
from types import TracebackType
from typing import Any

from overlay import Identity

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.key"
MAC_FILE = "tap.mac"
LOCK_FILE = "ipop.pid"
CONTROL_SOCKET = "control.sock"

IDENTITY_BYTES = 32
"""A raw Ed25519 private key (RFC 8032 seed)."""

MAX_RECORD_BYTES = 16 << 20
"""Largest JSON record read or written: a lease table of a /16 is about 3 MB; anything larger is not
ours, and is refused before it is read into memory."""

_RECORD_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MAC_TEXT = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class StateError(Exception):
    """The state directory or a file in it cannot be used; the message says which and why."""


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(text: str) -> bytes:
    """``"02:ab:..."`` -> 6 bytes; ValueError unless it is a unicast address other than all zeros."""
    text = text.strip().lower()
    if not _MAC_TEXT.match(text):
        raise ValueError(f"{text!r} is not a MAC address (six hex octets separated by ':')")
    mac = bytes.fromhex(text.replace(":", ""))
    if mac[0] & 0x01 or mac == bytes(6):
        raise ValueError(f"{text} is not a unicast MAC address")
    return mac


def random_local_mac(random6: bytes) -> bytes:
    """A locally administered (bit 1 set) unicast (bit 0 clear) MAC address from 6 random bytes, as
    Linux's eth_random_addr() makes them: it can never equal a vendor's address."""
    if len(random6) != 6:
        raise ValueError("need 6 random bytes")
    return bytes([(random6[0] & 0xFE) | 0x02]) + random6[1:]


class StateDir:
    """One node's state directory. ``StateDir(path)`` touches nothing; :meth:`prepare` creates it and
    :meth:`lock` takes it (``with StateDir(path) as state:`` does both and releases the lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @property
    def control_socket(self) -> Path:
        return self.path / CONTROL_SOCKET

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    # -- directory and lock ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the directory (mode 0700; parents as the umask says) or check the existing one: a
        directory owned by this user. Group or world access is removed, because the identity key and
        the control socket live here."""
        try:
            with contextlib.suppress(FileExistsError):  # a file there is refused just below
                self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.path.stat()
        except OSError as exc:
            raise StateError(f"state directory {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise StateError(f"state directory {self.path} is not a directory")
        if info.st_uid != os.geteuid():
            raise StateError(f"state directory {self.path} belongs to uid {info.st_uid}, not to this user")
        if stat.S_IMODE(info.st_mode) & 0o077:
            log.warning("state directory %s had mode %o; now 0700", self.path, stat.S_IMODE(info.st_mode))
            os.chmod(self.path, 0o700)

    def lock(self) -> None:
        """Take the directory for this process, or raise :class:`StateError` naming the process that
        holds it. The lock is an ``flock`` on ``ipop.pid``: the kernel drops it when the process dies,
        so a crashed node never leaves a stale lock behind."""
        if self._lock_fd is not None:
            raise RuntimeError(f"state directory {self.path} is already locked by this object")
        path = self.path / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(f"{path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"state directory {self.path} is in use by another ipop node (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StateDir:
        self.prepare()
        self.lock()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unlock()

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"state directory {self.path}: lock() it before using its files")

    # -- identity -------------------------------------------------------------------------------------

    def identity(self) -> Identity:
        """The node's identity: ``identity.key`` if it exists (it must be a regular file of 32 bytes
        readable by its owner only), else a new key from the operating system's randomness, written
        atomically with mode 0600."""
        self._require_lock()
        path = self.path / IDENTITY_FILE
        try:
            key = self._read_private(path, IDENTITY_BYTES)
        except FileNotFoundError:
            key = os.urandom(IDENTITY_BYTES)
            self._create_exclusive(path, key)
            log.info("created a new identity key in %s", path)
        return Identity(key)

    def _read_private(self, path: Path, size: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateError(f"{path} is a symbolic link; it must be a regular file") from None
            raise StateError(f"{path}: {exc.strerror or exc}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise StateError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(info.st_mode)
            if info.st_uid != os.geteuid():
                raise StateError(f"{path} belongs to uid {info.st_uid}, not to this user")
            if mode & 0o077:
                raise StateError(
                    f"{path} has mode {mode:04o}; a private key must be readable by its owner only "
                    f"(chmod 600 {path})"
                )
            data = f.read(size + 1)
        if len(data) != size:
            raise StateError(f"{path} has {info.st_size} bytes; expected {size} (a raw Ed25519 private key)")
        return data

    def _create_exclusive(self, path: Path, data: bytes) -> None:
        """Write ``data`` to a new file at ``path`` (mode 0600) atomically; never replaces a file."""
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise StateError(f"{path} appeared while it was being created") from None
        finally:
            tmp.unlink()
        self._sync_dir()

    def _write_temp(self, path: Path, data: bytes) -> Path:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left over by a crash of this same pid number long ago
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink()
            raise
        os.close(fd)
        return tmp

    def _replace(self, path: Path, data: bytes) -> None:
        tmp = self._write_temp(path, data)
        os.replace(tmp, path)
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- TAP MAC address ------------------------------------------------------------------------------

    def tap_mac(self) -> bytes:
        """The TAP device's MAC address (6 bytes): kept in ``tap.mac`` so that it survives restarts,
        created on first use as a random locally administered unicast address."""
        self._require_lock()
        path = self.path / MAC_FILE
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            mac = random_local_mac(os.urandom(6))
            self._create_exclusive(path, (format_mac(mac) + "\n").encode())
            log.info("created TAP MAC address %s in %s", format_mac(mac), path)
            return mac
        except OSError as exc:
            raise StateError(f"{path}: {exc.strerror or exc}") from None
        try:
            return parse_mac(text[:64])
        except ValueError as exc:
            raise StateError(f"{path}: {exc}; remove the file to get a new address") from None

    # -- JSON records ---------------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        if not _RECORD_NAME.match(name):
            raise ValueError(f"{name!r} is not a record name (lower-case letters, digits, '_', '-')")
        return self.path / f"{name}.json"

    def load_json(self, name: str) -> Any:
        """The record ``name`` as written by :meth:`save_json`, or None if there is none."""
        self._require_lock()
        path = self._record_path(name)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{path}: {exc.strerror or exc}") from None
        if len(data) > MAX_RECORD_BYTES:
            raise StateError(f"{path} is larger than {MAX_RECORD_BYTES} bytes")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StateError(f"{path} is not valid JSON ({exc}); remove it to start afresh") from None

    def save_json(self, name: str, value: Any) -> None:
        """Replace the record ``name`` atomically (mode 0600)."""
        self._require_lock()
        path = self._record_path(name)
        data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        if len(data) > MAX_RECORD_BYTES:
            raise ValueError(f"record {name!r} has {len(data)} bytes; the limit is {MAX_RECORD_BYTES}")
        self._replace(path, data)
