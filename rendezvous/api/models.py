"""The JSON bodies of the ``/v1`` API, validated with size limits on every field."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rendezvous.api.errors import ApiError

SWARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
PEER_ID = re.compile(r"[a-z2-7]{32}")
MAX_METADATA_BYTES = 1024

Scalar = str | int | float | bool


def check_swarm(name: str) -> str:
    if not SWARM_NAME.fullmatch(name):
        raise ApiError(
            400,
            "invalid",
            "swarm: 1-128 characters of A-Z a-z 0-9 . _ : -, starting alphanumeric",
        )
    return name


def check_peer_id(peer_id: str, what: str = "peer_id") -> str:
    if not PEER_ID.fullmatch(peer_id):
        raise ApiError(400, "invalid", f"{what}: 32 characters of a-z 2-7")
    return peer_id


class Candidate(BaseModel):
    """One address a peer can be reached at (an ICE-style candidate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ip: str = Field(max_length=45)
    port: int = Field(ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    type: Literal["host", "srflx", "prflx", "relay"] = "host"

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None


class JoinBody(BaseModel):
    """``PUT /v1/swarms/{swarm}/peers/{peer_id}``."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[Candidate] = Field(default_factory=list, max_length=16)
    nat: str | None = Field(default=None, max_length=64)
    metadata: dict[str, Scalar] = Field(default_factory=dict, max_length=32)
    ttl: int | None = None
    seeder: bool = False

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES}")
        return value
