"""Counters of the TURN core: plain ints on the hot path, exported by the collector."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(slots=True)
class TurnCounters:
    requests: dict[int, int] = field(default_factory=dict)  # by method
    error_responses: dict[int, int] = field(default_factory=dict)  # by code
    auth_failures: dict[str, int] = field(default_factory=dict)  # by reason
    allocations_created: int = 0
    permissions_created: int = 0
    channels_created: int = 0
    quota_rejections: int = 0
    policy_rejections: int = 0
    malformed: int = 0
    internal_errors: int = 0  # bugs: logged, counted, the worker carries on
    to_peer_packets: int = 0
    to_peer_bytes: int = 0
    to_client_packets: int = 0
    to_client_bytes: int = 0
    client_dropped: int = 0  # ChannelData / Send with no allocation, channel or permission
    peer_dropped: int = 0  # peer data without a permission
    bandwidth_dropped: int = 0  # relayed datagrams over the allocation's --max-bps
    # Gauges, set by the process that owns the allocations at each scrape/report.
    allocations: int = 0
    permissions: int = 0
    channels: int = 0
    routed_channels: int = 0  # channels the C data plane relays (relay.turn.routes)

    def count_request(self, method: int) -> None:
        self.requests[method] = self.requests.get(method, 0) + 1

    def count_error(self, code: int) -> None:
        self.error_responses[code] = self.error_responses.get(code, 0) + 1

    def count_auth_failure(self, reason: str) -> None:
        self.auth_failures[reason] = self.auth_failures.get(reason, 0) + 1

    def clear_gauges(self) -> None:
        self.allocations = self.permissions = self.channels = self.routed_channels = 0

    def merge(self, other: TurnCounters) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for key, n in theirs.items():
                    mine[key] = mine.get(key, 0) + n
            else:
                setattr(self, f.name, mine + theirs)
