"""The single exception type raised by the BitTorrent tracker codecs."""

from __future__ import annotations

__all__ = ["TrackerError"]


class TrackerError(ValueError):
    """Tracker wire data (or a value to be encoded) is malformed.

    This is the only exception the parsers in :mod:`rendezvous.bittorrent` raise, whatever
    bytes or query string they are given, and the only one the encoders raise for bad
    values. The message names the field and what was wrong with it, so that it can be
    logged as is or sent back to the client as a ``failure reason`` / UDP error message.
    """
