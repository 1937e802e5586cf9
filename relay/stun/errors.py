"""The single exception type raised by the STUN codec."""

from __future__ import annotations

__all__ = ["StunError"]


class StunError(ValueError):
    """A STUN message (or a value to be encoded) is malformed.

    This is the only exception :func:`relay.stun.parse` raises, whatever bytes it is
    given, and the only one :meth:`relay.stun.Message.encode` raises for bad values.
    The message names the problem precisely (attribute, offset, lengths) so that it
    can be logged as is.
    """
