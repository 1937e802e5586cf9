"""natkit client SDK: NAT discovery, hole punching and relay fallback (issues #5, #6).

``client_sdk.Peer(rendezvous_urls, ...)``: a peer's identity, swarms and signaling through
one or more rendezvous servers (``client_sdk.rendezvous``), and ``connect``/``accept``:
``PeerConnection``s over hole-punched direct paths or, where none is found, a TURN relay
(``client_sdk.connect``).

``client_sdk.netcheck(...) -> NatReport``: NAT behaviour discovery. The attribute is the
function (DESIGN.md); the package of the same name holds its parts: import them with
``from client_sdk.netcheck import NatReport`` (``import client_sdk.netcheck as m`` would
bind the function, since Python resolves that form by attribute).
"""

from client_sdk.connect import ConnectError, ConnectionClosed, PathChanged, PeerConnection
from client_sdk.netcheck import (
    FilteringBehavior,
    MappingBehavior,
    NatReport,
    NetcheckError,
)
from client_sdk.netcheck import netcheck as netcheck
from client_sdk.peer import Peer
from client_sdk.rendezvous import Candidate, RendezvousClient, RendezvousError

__all__ = [
    "Candidate",
    "ConnectError",
    "ConnectionClosed",
    "FilteringBehavior",
    "MappingBehavior",
    "NatReport",
    "NetcheckError",
    "PathChanged",
    "Peer",
    "PeerConnection",
    "RendezvousClient",
    "RendezvousError",
    "netcheck",
]
