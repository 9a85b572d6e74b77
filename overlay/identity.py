"""Pure. A node's identity: its Ed25519 key pair and the overlay address derived from it.

The private key arrives from outside: the node runtime reads it from (or creates it in) the state
directory with the operating system's randomness, and the simulator derives it from its seeded
``random.Random`` so that a run is reproducible. Nothing here touches files or global randomness.
"""

from __future__ import annotations

from random import Random

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from .address import Address, address_from_public_key

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class Identity:
    """An Ed25519 key pair with its overlay address."""

    __slots__ = ("_private", "address", "public_key")

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != PRIVATE_KEY_BYTES:
            raise ValueError("an Ed25519 private key has 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(private_key)
        self.public_key: bytes = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.address: Address = address_from_public_key(self.public_key)

    @classmethod
    def generate(cls, rng: Random) -> Identity:
        """A new identity from ``rng``: pass ``random.SystemRandom()`` for a real node (its
        ``randbytes`` is ``os.urandom``), a seeded ``random.Random`` in the simulator."""
        return cls(rng.randbytes(PRIVATE_KEY_BYTES))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``; never raises on
    malformed input (keys and signatures come off the wire)."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
