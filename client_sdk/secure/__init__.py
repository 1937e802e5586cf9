"""End-to-end secure datagram channel between two peers (issue #6, security part).

Noise ``XX`` (25519, ChaChaPoly, SHA256) with the Noise static keys bound to the peers'
Ed25519 identities as libp2p does, then WireGuard-style transport datagrams (explicit
64-bit counter as nonce, RFC 6479 replay window). ``session.py`` explains the
construction and the wire format; ``SecureSession`` is the sans-IO core. Its asyncio
driver is the connection's path, ``client_sdk.connect.udp.Link`` (through the punch).
"""

from client_sdk.secure.handshake import ChannelError
from client_sdk.secure.replay import ReplayWindow
from client_sdk.secure.session import (
    MAX_PAYLOAD,
    TRANSPORT_OVERHEAD,
    DatagramReceived,
    Event,
    HandshakeComplete,
    MessageType,
    Role,
    SecureSession,
    SessionConfig,
    SessionFailed,
    SessionState,
    SessionStats,
)

__all__ = [
    "MAX_PAYLOAD",
    "TRANSPORT_OVERHEAD",
    "ChannelError",
    "DatagramReceived",
    "Event",
    "HandshakeComplete",
    "MessageType",
    "ReplayWindow",
    "Role",
    "SecureSession",
    "SessionConfig",
    "SessionFailed",
    "SessionState",
    "SessionStats",
]
