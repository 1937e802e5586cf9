"""The signaling WebSocket's JSON messages.

Server -> client: ``{"type": "challenge", "challenge"}`` on connect; ``{"type": "welcome",
"peer_id"}`` once the hello checks out; ``{"type": "signal", "from", "id", "data"}``;
``{"type": "error", "code", "message", "id"?, "to"?}``.

Client -> server: ``{"type": "hello", "public_key", "signature"}`` (Ed25519 over the
challenge and ``WEBSOCKET_HELLO``, see ``client_sdk.identity``), then ``{"type":
"signal", "to", "id"?, "data"}`` -- ``data`` is any JSON (an offer, an answer,
candidates, an app message) of at most ``MAX_SIGNAL_BYTES`` once encoded.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

MAX_SIGNAL_BYTES = 16 * 1024
MAX_FRAME_BYTES = 64 * 1024  # beyond this aiohttp closes the socket (1009)
PEER_ID_PATTERN = r"^[a-z2-7]{32}$"


class Hello(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["hello"]
    public_key: str = Field(max_length=64)
    signature: str = Field(max_length=128)


class Signal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["signal"]
    to: str = Field(pattern=PEER_ID_PATTERN)
    id: str | None = Field(default=None, max_length=64)
    data: Any

    @field_validator("data")
    @classmethod
    def _small(cls, data: Any) -> Any:
        size = len(json.dumps(data, separators=(",", ":")).encode())
        if size > MAX_SIGNAL_BYTES:
            raise ValueError(f"data is {size} bytes as JSON; at most {MAX_SIGNAL_BYTES}")
        return data


ClientMessage = TypeAdapter(Annotated[Hello | Signal, Field(discriminator="type")])


def error(code: str, message: str, **extra: Any) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, **extra})


def signal(sender: str, message: Signal) -> bytes:
    body = {"type": "signal", "from": sender, "id": message.id, "data": message.data}
    return json.dumps(body, separators=(",", ":")).encode()
