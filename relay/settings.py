"""The relay's configuration: one pydantic-settings class, ``RELAY_`` environment prefix.

Every field is also a ``natkit relay`` command-line flag (``--field-name``). Lists are given
on the command line by repeating the flag, and in the environment either as a JSON list or
comma-separated (``RELAY_LISTEN=127.0.0.1:3478,127.0.0.2:3478``).
"""

from __future__ import annotations

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


EndpointField = Annotated[Endpoint, BeforeValidator(_endpoint)]
EndpointList = Annotated[list[EndpointField], NoDecode, BeforeValidator(_split_list)]


class RelaySettings(BaseSettings):
    """Settings of ``natkit relay`` (STUN server; TURN comes next)."""

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

    def primary_for(self, alt: Endpoint) -> Endpoint | None:
        """The first ``listen`` address of ``alt``'s family: the RFC 5780 primary."""
        return next((e for e in self.listen if e.family == alt.family), None)
