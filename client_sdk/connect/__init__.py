"""Connectivity between peers (issue #6): ``Peer.connect``/``Peer.accept`` and the
``PeerConnection`` they return.

Layout: ``candidates`` (what a peer offers and what it probes; pure), ``punch`` (the
hole punch, sans-IO: the secure channel's handshake sent to every candidate on a paced
schedule, the first authenticated answer fixing the path), ``udp`` (the one connectivity
socket per peer: STUN for its reflexive address, demultiplexing, timers), ``relay`` (the
peer's TURN allocation, carrying relay paths the same way), ``connection``
(``PeerConnection`` over its ``"direct"`` and ``"relay"`` paths: upgrade, fallback),
``connector`` (the procedure through the rendezvous's punch brokering, and the choice).
"""

from client_sdk.connect.candidates import local_candidates, punch_targets
from client_sdk.connect.connection import (
    ConnectError,
    ConnectionClosed,
    PathChanged,
    PathKind,
    PathLink,
    PeerConnection,
)
from client_sdk.connect.connector import Connector
from client_sdk.connect.punch import PunchConfig, keepalive_for, probe_times

__all__ = [
    "ConnectError",
    "ConnectionClosed",
    "Connector",
    "PathChanged",
    "PathKind",
    "PathLink",
    "PeerConnection",
    "PunchConfig",
    "keepalive_for",
    "local_candidates",
    "probe_times",
    "punch_targets",
]
