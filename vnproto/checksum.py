"""Pure. The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

The one's-complement sum is independent of byte order (RFC 1071 §2(B)), so the words are summed in the
machine's native order with ``array`` (one C loop instead of a Python loop per word) and the folded
result is swapped once at the end on little-endian machines. This keeps a full IPv4 header checksum at
about a microsecond, which matters because the data plane verifies or rewrites one per packet.
"""

from __future__ import annotations

import sys
from array import array

_LITTLE = sys.byteorder == "little"


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The folded 16-bit one's-complement sum of ``data`` (padded with a zero byte if odd), plus
    ``initial`` (a partial sum in network order, e.g. of a pseudo-header)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    words = array("H")
    words.frombytes(data)
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    if _LITTLE:
        total = ((total & 0xFF) << 8) | (total >> 8)
    total += initial
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The checksum to put in a header: the complement of the one's-complement sum. Summing a header
    that already holds its correct checksum gives 0 from this function."""
    return (~ones_complement_sum(data, initial)) & 0xFFFF


def checksum_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """Adjust a checksum after one 16-bit word of the covered data changed from ``old_word`` to
    ``new_word``, without summing everything again: HC' = ~(~HC + ~m + m') (RFC 1624 eqn. 3)."""
    total = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF
