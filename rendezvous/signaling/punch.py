"""Punch brokering, as libp2p DCUtR does over a relay, with the server as the relay.

A asks to punch B with its fresh candidates; the server forwards them with A's
round-trip time to the server (``rtt_ms``). B answers with its own candidates and A's
round-trip time back; the server that holds B knows both round trips and tells each side
"punch in ``delay_ms``", chosen so that both "go" messages take effect at the same moment
and the first packets cross in flight (that is what opens both NATs):

    A acts at  t + rtt_A/2 + delay_A,   B at  t + rtt_B/2 + delay_B,   equal when
    delay_A = MARGIN + max(0, rtt_B/2 - rtt_A/2),  delay_B = MARGIN + max(0, rtt_A/2 - rtt_B/2)

A retry is a new ``punch`` with a new ``id``. A socket whose round trip is not measured
yet counts as ``DEFAULT_RTT_MS``.
"""

from __future__ import annotations

import json
from typing import Any

from rendezvous.signaling.protocol import Punch, PunchAccept

MARGIN_MS = 50.0
DEFAULT_RTT_MS = 100.0


def delays(rtt_a_ms: float, rtt_b_ms: float) -> tuple[float, float]:
    """(delay for A, delay for B) in ms, so that both act at the same moment."""
    one_way_a, one_way_b = rtt_a_ms / 2, rtt_b_ms / 2
    return (
        MARGIN_MS + max(0.0, one_way_b - one_way_a),
        MARGIN_MS + max(0.0, one_way_a - one_way_b),
    )


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def request(sender: str, message: Punch, rtt_ms: float) -> bytes:
    """What B receives when A asks to punch."""
    candidates = [c.model_dump() for c in message.candidates]
    return _encode(
        {
            "type": "punch",
            "from": sender,
            "id": message.id,
            "candidates": candidates,
            "rtt_ms": rtt_ms,
        }
    )


def go(accepter: str, message: PunchAccept, accepter_rtt_ms: float) -> tuple[bytes, dict[str, Any]]:
    """(for A, the initiator, via the bus; for B, the accepter, locally)."""
    delay_a, delay_b = delays(message.peer_rtt_ms, accepter_rtt_ms)
    for_a = {
        "type": "punch_now",
        "peer": accepter,
        "id": message.id,
        "candidates": [c.model_dump() for c in message.candidates],
        "delay_ms": round(delay_a, 1),
        "rtt_ms": message.peer_rtt_ms,
        "peer_rtt_ms": accepter_rtt_ms,
    }
    for_b = {
        "type": "punch_now",
        "peer": message.to,
        "id": message.id,
        "candidates": [],  # B has A's candidates from the request
        "delay_ms": round(delay_b, 1),
        "rtt_ms": accepter_rtt_ms,
        "peer_rtt_ms": message.peer_rtt_ms,
    }
    return _encode(for_a), for_b
