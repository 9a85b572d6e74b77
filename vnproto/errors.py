"""Pure. The one exception that untrusted bytes may raise.

Every decoder in this package raises :class:`DecodeError` and nothing else for malformed input, so that
a receive path can catch exactly one type, count the bad frame, log it at debug and drop it. Misuse of
our own API (an encoder handed a value out of range) raises ``ValueError`` loudly instead: that is a
bug to fix, not traffic to drop.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """Bytes from the wire could not be decoded. The message says which field and why."""
