"""The client side of the rendezvous server (issue #6): signed ``/v1`` HTTP calls
(``http``), the signaling WebSocket (``signaling``) and the resilient client over one or
more rendezvous URLs (``client``). It speaks the wire protocol only: nothing here imports
the server's packages."""

from client_sdk.rendezvous.client import (
    Backoff,
    ClientEvent,
    Connected,
    ConnectionState,
    Disconnected,
    JoinSpec,
    Registered,
    RegistrationFailed,
    RendezvousClient,
    Subscription,
)
from client_sdk.rendezvous.http import (
    Candidate,
    JoinResult,
    PeerInfo,
    PeerPage,
    PeerSample,
    RendezvousError,
    RendezvousHttp,
    SwarmStats,
    TurnCredentials,
)
from client_sdk.rendezvous.signaling import (
    IncomingSignal,
    ProtocolError,
    PunchNow,
    PunchRequest,
    ServerError,
    SignalingEvent,
    SignalingSocket,
)

__all__ = [
    "Backoff",
    "Candidate",
    "ClientEvent",
    "Connected",
    "ConnectionState",
    "Disconnected",
    "IncomingSignal",
    "JoinResult",
    "JoinSpec",
    "PeerInfo",
    "PeerPage",
    "PeerSample",
    "ProtocolError",
    "PunchNow",
    "PunchRequest",
    "Registered",
    "RegistrationFailed",
    "RendezvousClient",
    "RendezvousError",
    "RendezvousHttp",
    "ServerError",
    "SignalingEvent",
    "SignalingSocket",
    "Subscription",
    "SwarmStats",
    "TurnCredentials",
]
