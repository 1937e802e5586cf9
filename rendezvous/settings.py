"""The rendezvous server's configuration: one pydantic-settings class, ``RENDEZVOUS_``
environment prefix; every field is also a ``natkit rendezvous`` flag."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class RendezvousSettings(BaseSettings):
    """Settings of ``natkit rendezvous``: peer registry, tracker and signaling."""

    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_", extra="forbid")

    host: str = Field(default="0.0.0.0", description="address to serve HTTP/WebSocket on")
    port: int = Field(default=8470, ge=0, le=65535, description="TCP port (0: any free port)")
    store: str = Field(
        default="memory",
        description="memory (one process), redis://HOST:PORT/DB or redis+cluster://HOST:PORT",
    )
    secret: str = Field(
        default="",
        description="signs challenges; set the same value on every instance sharing a store "
        "(empty: a random secret, good for one instance only)",
    )
    min_ttl: int = Field(default=30, ge=1, description="shortest registration (s)")
    max_ttl: int = Field(default=3600, ge=1, description="longest registration (s)")
    default_ttl: int = Field(default=300, ge=1, description="registration without a ttl (s)")
    default_numwant: int = Field(default=30, ge=0, description="peers listed when not asked")
    max_numwant: int = Field(default=200, ge=1, description="most peers in one answer")
    swarm_capacity: int = Field(
        default=100_000, ge=0, description="peers one swarm holds (0: unlimited)"
    )
    turn_secret: str = Field(
        default="",
        description="TURN REST API secret shared with the relays (their --auth-secret): "
        "mints /v1/turn-credentials and checks relay heartbeats",
    )
    turn_uris: list[str] = Field(
        default_factory=list,
        description="TURN URIs to hand out when no relay heartbeats (e.g. a coturn fleet)",
    )
    turn_ttl: int = Field(
        default=86400, ge=60, le=7 * 86400, description="lifetime of TURN credentials (s)"
    )
    signal_queue: int = Field(
        default=256,
        ge=1,
        le=65536,
        description="messages waiting for one slow WebSocket reader before it is closed",
    )
    ping_interval: float = Field(
        default=10.0,
        ge=0.05,
        le=300,
        description="seconds between a signaling socket's pings (its round trip for punch "
        "timing; on the lean listener a socket silent for a whole interval is closed)",
    )
    udp_tracker: str = Field(
        default="",
        description="HOST:PORT of the BitTorrent UDP tracker (BEP 15); empty: none",
    )
    http_tracker: str = Field(
        default="",
        description="HOST:PORT of the BitTorrent HTTP tracker on a port of its own (faster "
        "than /announce on the API port, which stays); empty: none",
    )
    udp_batch_io: bool = Field(
        default=True,
        description="serve the UDP tracker with recvmmsg/sendmmsg batches where the relay's "
        "C data plane is built (Linux); off: the event loop's datagram transport",
    )
    announce_interval: int = Field(
        default=1800, ge=10, description="BitTorrent re-announce interval (s)"
    )
    announce_min_interval: int = Field(
        default=60, ge=1, description="BitTorrent minimum re-announce interval (s)"
    )
    tenants_file: str = Field(
        default="",
        description="JSON file of tenants, their API key hashes and JWT keys "
        "(rendezvous.tenants); empty: one public namespace",
    )
    public: bool = Field(
        default=True,
        description="serve the public namespace without credentials; off: every /v1 "
        "request needs a tenant's API key or token",
    )
    rate_limit: float = Field(
        default=50.0, ge=0, description="requests per second per client IP (0: no limit)"
    )
    rate_burst: float = Field(default=100.0, ge=1, description="requests a client IP may burst")
    peers_per_ip: int = Field(
        default=32, ge=1, description="peer identities registered from one IP at a time"
    )
    peers_per_network: int = Field(
        default=1024, ge=1, description="peer identities registered from one /24 or /64"
    )
    challenge_lifetime: int = Field(
        default=60, ge=5, le=3600, description="seconds a challenge can be signed"
    )
    log_level: LogLevel = Field(default="info", description="log verbosity")

    @model_validator(mode="after")
    def _ttl_order(self) -> RendezvousSettings:
        if not self.min_ttl <= self.default_ttl <= self.max_ttl:
            raise ValueError("need min_ttl <= default_ttl <= max_ttl")
        return self

    @model_validator(mode="after")
    def _trackers_are_public(self) -> RendezvousSettings:
        # The BitTorrent trackers take no credentials: they serve the public namespace,
        # which --no-public closes (the API port's /announce answers 401 then).
        if not self.public and (self.udp_tracker or self.http_tracker):
            raise ValueError(
                "--udp-tracker and --http-tracker serve the public namespace: not with --no-public"
            )
        return self
