"""BitTorrent tracker wire formats, sans-IO (no sockets, no event loop, no storage).

* :mod:`.bencode` -- strict bencoding (BEP 3);
* :mod:`.announce` -- HTTP tracker: announce (BEP 3), compact peers (BEP 23), ``peers6``
  (BEP 7), scrape (BEP 48);
* :mod:`.udp` -- UDP tracker (BEP 15) with announce options (BEP 41);
* :mod:`.connection_ids` -- stateless BEP 15 connection ids.

Every parser and encoder raises only :class:`TrackerError`.
"""

from __future__ import annotations

from . import announce, bencode, connection_ids, udp
from .announce import Event, ScrapeEntry, TrackerPeer
from .connection_ids import ConnectionIds
from .errors import TrackerError

__all__ = [
    "ConnectionIds",
    "Event",
    "ScrapeEntry",
    "TrackerError",
    "TrackerPeer",
    "announce",
    "bencode",
    "connection_ids",
    "udp",
]
