"""Plain integer counters kept by the protocol cores on the hot path.

Incrementing a Prometheus counter per packet costs a lock; these are bare ints on a
slotted object, read by the metrics collector at scrape time (and shipped from worker
processes to the supervisor as snapshots).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from relay.stun import Method


class DropReason(IntEnum):
    """Why a datagram got no answer."""

    NOT_STUN = 0  # too short, or the first two bits are not zero (RFC 8489 §6)
    BAD_LENGTH = 1  # length field disagrees with the datagram, or not a multiple of 4
    BAD_FINGERPRINT = 2  # RFC 8489 §14.7: a message whose FINGERPRINT fails is discarded
    CLASSIC_DISABLED = 3  # RFC 3489 request while --rfc3489 is off
    UNEXPECTED_CLASS = 4  # a response the server never asked for
    MALFORMED = 5  # not parseable and not a request we could answer with 400
    INTERNAL_ERROR = 6  # a bug: counted and logged, the worker keeps going
    TOO_LARGE = 7  # larger than the receive buffer (no STUN message over UDP is)
    BAD_FRAMING = 8  # a TCP/TLS stream that is not STUN/ChannelData: connection closed


@dataclass(slots=True)
class StunCounters:
    """Counts of what the STUN core did; summed across workers by ``merge``."""

    requests: dict[int, int] = field(default_factory=lambda: {Method.BINDING: 0})  # by method
    indications: int = 0
    success: int = 0
    # Binding requests answered on the fast path: each is both a Binding request and a
    # success, counted once here to keep the per-packet work minimal.
    fast_bindings: int = 0
    send_failures: int = 0  # replies the socket refused (buffer full, unroutable)
    error_responses: dict[int, int] = field(default_factory=dict)  # by error code
    dropped: list[int] = field(default_factory=lambda: [0] * len(DropReason))

    def binding_requests(self) -> int:
        return self.requests[Method.BINDING] + self.fast_bindings

    def successes(self) -> int:
        return self.success + self.fast_bindings

    def count_request(self, method: int) -> None:
        self.requests[method] = self.requests.get(method, 0) + 1

    def count_error(self, code: int) -> None:
        self.error_responses[code] = self.error_responses.get(code, 0) + 1

    def merge(self, other: StunCounters) -> None:
        for method, n in other.requests.items():
            self.requests[method] = self.requests.get(method, 0) + n
        for code, n in other.error_responses.items():
            self.error_responses[code] = self.error_responses.get(code, 0) + n
        self.indications += other.indications
        self.success += other.success
        self.fast_bindings += other.fast_bindings
        self.send_failures += other.send_failures
        for i, n in enumerate(other.dropped):
            self.dropped[i] += n
