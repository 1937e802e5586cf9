"""The relay's configuration: one pydantic-settings class, ``RELAY_`` environment prefix.

Every field is also a ``natkit relay`` command-line flag (``--field-name``). Lists are given
on the command line by repeating the flag, and in the environment either as a JSON list or
comma-separated (``RELAY_LISTEN=127.0.0.1:3478,127.0.0.2:3478``).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from relay.endpoint import Endpoint

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _split_list(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            import json

            return json.loads(value)
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return value


def _endpoint(value: object) -> object:
    return Endpoint.parse(value, default_port=3478) if isinstance(value, str) else value


def _ip(value: object) -> object:
    if isinstance(value, str):
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    return value


EndpointField = Annotated[Endpoint, BeforeValidator(_endpoint)]
StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
EndpointHostList = Annotated[
    list[Annotated[str, BeforeValidator(_ip)]], NoDecode, BeforeValidator(_split_list)
]
EndpointList = Annotated[list[EndpointField], NoDecode, BeforeValidator(_split_list)]


class RelaySettings(BaseSettings):
    """Settings of ``natkit relay``: STUN (RFC 8489, RFC 5780) and TURN (RFC 8656)."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="forbid")

    listen: EndpointList = Field(
        default_factory=lambda: [Endpoint("0.0.0.0", 3478)],
        description="UDP address to answer STUN on (HOST:PORT, [V6]:PORT); repeat for several",
    )
    alt_listen: EndpointList = Field(
        default_factory=list,
        description=(
            "RFC 5780 alternate address (IP2:PORT2) of the first --listen address of the same "
            "family; the server then also listens on IP1:PORT2, IP2:PORT1 and IP2:PORT2 and "
            "answers CHANGE-REQUEST and OTHER-ADDRESS"
        ),
    )
    workers: int = Field(
        default=1, ge=1, le=256, description="worker processes sharing the ports (SO_REUSEPORT)"
    )
    batch_io: bool = Field(
        default=True,
        description="serve UDP with recvmmsg/sendmmsg batches (Linux); off: one event-loop "
        "callback per datagram",
    )
    rfc3489: bool = Field(
        default=False,
        description="also answer classic RFC 3489 requests (no magic cookie); off by default "
        "because they can be used for reflection",
    )
    software: str = Field(
        default="natkit",
        max_length=127,
        description="SOFTWARE attribute in responses (empty string: none)",
    )
    metrics_listen: EndpointField | None = Field(
        default=Endpoint("127.0.0.1", 9641),
        description="HOST:PORT for Prometheus /metrics and /livez (empty: disabled)",
    )
    log_level: LogLevel = Field(default="info", description="logging level")

    tcp: bool = Field(
        default=True,
        description="also accept STUN and TURN over TCP on the --listen addresses",
    )
    tls_listen: EndpointList = Field(
        default_factory=list,
        description="TCP address for STUN and TURN over TLS (e.g. 0.0.0.0:5349); needs "
        "--cert and --key",
    )
    cert: str | None = Field(default=None, description="TLS certificate chain file (PEM)")
    key: str | None = Field(default=None, description="TLS private key file (PEM)")

    # --- TURN (RFC 8656) ---
    realm: str = Field(default="natkit", min_length=1, max_length=127, description="TURN realm")
    user: StrList = Field(
        default_factory=list,
        description="TURN long-term credential NAME:PASSWORD; repeat for several users",
    )
    auth_secret: StrList = Field(
        default_factory=list,
        description="TURN REST API shared secret (username = EXPIRY:USER, password = "
        "base64(HMAC-SHA1(secret, username))); repeat to accept several while rotating",
    )
    allow_peer: StrList = Field(
        default_factory=list,
        description="CIDR of peer addresses to allow although denied by default "
        "(e.g. 127.0.0.0/8 for tests)",
    )
    deny_peer: StrList = Field(
        default_factory=list, description="CIDR of peer addresses to deny in addition"
    )
    relay_ip: EndpointHostList = Field(
        default_factory=list,
        description="IP to bind relayed sockets to, one per address family (default: the "
        "first specific --listen address of each family)",
    )
    external_ip: StrList = Field(
        default_factory=list,
        description="PUBLIC[/PRIVATE]: behind a 1:1 NAT, advertise PUBLIC as the relayed "
        "address while binding PRIVATE (default PRIVATE: the --relay-ip of that family); "
        "one per address family",
    )
    # --- Relay directory: heartbeats to the rendezvous server ---
    rendezvous_url: str = Field(
        default="",
        description="rendezvous server to heartbeat into (e.g. http://rdv:8470); needs "
        "--auth-secret, the secret the rendezvous mints TURN credentials with",
    )
    region: str = Field(default="", max_length=64, description="region this relay serves")
    public_host: str = Field(
        default="",
        description="host name or IP clients reach this relay at, for the TURN URIs it "
        "advertises (default: --external-ip, else the --listen address)",
    )
    heartbeat_interval: float = Field(
        default=10.0, gt=0, le=300, description="seconds between heartbeats"
    )
    max_bps: int = Field(
        default=0,
        ge=0,
        description="relayed bytes per second per allocation, both directions together; "
        "beyond it datagrams are dropped (0: no limit)",
    )
    min_port: int = Field(default=49152, ge=1024, le=65535, description="lowest relay port")
    max_port: int = Field(default=65535, ge=1024, le=65535, description="highest relay port")
    max_allocations: int = Field(
        default=100_000, ge=0, description="allocations at most, in total per worker"
    )
    user_quota: int = Field(
        default=0, ge=0, description="allocations at most per user (0: unlimited)"
    )
    legacy_channels: bool = Field(
        default=True,
        description="accept ChannelBind numbers 0x5000-0x7FFF as RFC 5766 did (coturn's "
        "clients use them); off: only RFC 8656's 0x4000-0x4FFF",
    )
    max_lifetime: int = Field(
        default=3600, ge=600, le=86400, description="longest allocation lifetime, seconds"
    )

    @field_validator("metrics_listen", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check_alternates(self) -> RelaySettings:
        if not self.listen:
            raise ValueError("at least one --listen address is required")
        seen: set[int] = set()
        for alt in self.alt_listen:
            if alt.family in seen:
                raise ValueError(f"--alt-listen {alt}: only one alternate per address family")
            seen.add(alt.family)
            primary = self.primary_for(alt)
            if primary is None:
                raise ValueError(f"--alt-listen {alt}: no --listen address of the same family")
            if primary.is_wildcard or alt.is_wildcard:
                raise ValueError(
                    f"--alt-listen {alt}: RFC 5780 needs specific addresses, not a wildcard "
                    f"(primary {primary})"
                )
            if primary.host == alt.host or primary.port == alt.port:
                raise ValueError(
                    f"--alt-listen {alt}: the alternate must differ from {primary} in both "
                    "IP address and port"
                )
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> RelaySettings:
        if self.tls_listen and not (self.cert and self.key):
            raise ValueError("--tls-listen needs --cert and --key")
        return self

    @model_validator(mode="after")
    def _check_turn(self) -> RelaySettings:
        if self.min_port > self.max_port:
            raise ValueError(f"--min-port {self.min_port} is above --max-port {self.max_port}")
        for entry in self.user:
            name, sep, password = entry.partition(":")
            if not sep or not name or not password:
                raise ValueError(f"--user {entry!r}: expected NAME:PASSWORD")
        for option, cidrs in (("--allow-peer", self.allow_peer), ("--deny-peer", self.deny_peer)):
            for cidr in cidrs:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise ValueError(f"{option} {cidr!r}: not a CIDR") from None
        externals: list[int] = []
        for entry in self.external_ip:
            public, _, private = entry.partition("/")
            try:
                addresses = [ipaddress.ip_address(public)]
                if private:
                    addresses.append(ipaddress.ip_address(private))
            except ValueError:
                raise ValueError(
                    f"--external-ip {entry!r}: expected PUBLIC[/PRIVATE] IPs"
                ) from None
            if len({a.version for a in addresses}) != 1:
                raise ValueError(f"--external-ip {entry!r}: PUBLIC and PRIVATE families differ")
            externals.append(addresses[0].version)
        if len(set(externals)) != len(externals):
            raise ValueError("--external-ip: at most one per address family")
        families = [Endpoint(ip, 0).family for ip in self.relay_ip]
        if len(set(families)) != len(families):
            raise ValueError("--relay-ip: at most one address per family")
        return self

    def users(self) -> dict[str, str]:
        """``--user`` entries as a mapping name -> password."""
        return dict(entry.split(":", 1) for entry in self.user)

    def relay_ips(self) -> dict[int, tuple[str, str]]:
        """Family -> (IP to bind relayed sockets to, IP to advertise for them)."""
        ips: dict[int, str] = {}
        for ip in self.relay_ip:
            ips[Endpoint(ip, 0).family] = ip
        for endpoint in self.listen:
            if endpoint.family not in ips and not endpoint.is_wildcard:
                ips[endpoint.family] = endpoint.host
        result = {family: (ip, ip) for family, ip in ips.items()}
        for public, private in self.external_ips():
            family = Endpoint(public, 0).family
            bind = private or ips.get(family)
            if bind is None:
                raise ValueError(
                    f"--external-ip {public}: no private or --relay-ip address to bind"
                )
            result[family] = (bind, public)
        return result

    def external_ips(self) -> list[tuple[str, str | None]]:
        """``--external-ip`` as (public, private or None) pairs."""
        pairs: list[tuple[str, str | None]] = []
        for entry in self.external_ip:
            public, _, private = entry.partition("/")
            pairs.append((public, private or None))
        return pairs

    def primary_for(self, alt: Endpoint) -> Endpoint | None:
        """The first ``listen`` address of ``alt``'s family: the RFC 5780 primary."""
        return next((e for e in self.listen if e.family == alt.family), None)
