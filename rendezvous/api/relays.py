"""The relay directory and TURN credentials.

``PUT /v1/relays/{relay_id}``: a relay's heartbeat (``relay.heartbeat`` signs it with the
shared TURN secret). ``GET /v1/turn-credentials?region=R`` (signed by a peer): TURN REST
API credentials for that peer -- ``{"username": "<expiry>:<peer_id>", "password",
"ttl", "uris"}``, the shape WebRTC apps put in ``RTCIceServer`` -- with the URIs of up
to ``MAX_RELAYS`` live relays, those of region R first, then the least loaded; or the
static ``--turn-uris`` when no relay heartbeats.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.heartbeat import MIN_TTL, SIGNATURE_HEADER, check
from relay.turn.auth import rest_api_credentials
from rendezvous import keys
from rendezvous.api.auth import signed_peer
from rendezvous.api.errors import ApiError, validation_message
from rendezvous.api.models import SWARM_NAME

routes = web.RouteTableDef()

MAX_RELAYS = 3


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = Field(default="", max_length=64)
    uris: list[str] = Field(min_length=1, max_length=8)
    load: float = Field(ge=0.0, le=1.0)
    ttl: float = Field(default=30.0, ge=MIN_TTL, le=900.0)

    @field_validator("uris")
    @classmethod
    def _turn_uris(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            if len(uri) > 256 or not uri.startswith(("turn:", "turns:", "stun:")):
                raise ValueError(f"{uri[:64]!r} is not a turn:, turns: or stun: URI")
        return uris


def _secret(request: web.Request) -> str:
    secret = request.app[keys.SETTINGS].turn_secret
    if not secret:
        raise ApiError(503, "no_turn_secret", "this server has no --turn-secret configured")
    return secret


@routes.put("/v1/relays/{relay_id:[^/]+}")
async def heartbeat(request: web.Request) -> web.Response:
    relay_id = request.match_info["relay_id"]
    if not SWARM_NAME.fullmatch(relay_id):
        raise ApiError(400, "invalid", "relay_id: 1-128 characters of A-Z a-z 0-9 . _ : -")
    secret = _secret(request)
    body = await request.read()
    now = request.app[keys.CLOCK]()
    problem = check([secret], request.headers.get(SIGNATURE_HEADER, ""), body, now)
    if problem is not None:
        raise ApiError(401, "bad_relay_signature", problem)
    try:
        beat = Heartbeat.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(400, "invalid", validation_message(exc)) from exc
    data = beat.model_dump_json().encode()
    await request.app[keys.STORE].heartbeat_relay(relay_id, data, ttl=beat.ttl, now=now)
    return web.Response(status=204)


@routes.get("/v1/turn-credentials")
async def turn_credentials(request: web.Request) -> web.Response:
    secret = _secret(request)
    peer_id, _ = await signed_peer(request)
    region = request.query.get("region", "")
    if len(region) > 64:
        raise ApiError(400, "invalid", "region: at most 64 characters")
    app = request.app
    settings, now = app[keys.SETTINGS], app[keys.CLOCK]()
    beats = [Heartbeat.model_validate_json(r.data) for r in await app[keys.STORE].relays(now=now)]
    beats.sort(key=lambda beat: (beat.region != region, beat.load))
    uris = [uri for beat in beats[:MAX_RELAYS] for uri in beat.uris] or settings.turn_uris
    if not uris:
        raise ApiError(503, "no_relays", "no relay has sent a heartbeat and no --turn-uris")
    username, password = rest_api_credentials(secret, peer_id, settings.turn_ttl, now)
    return web.json_response(
        {"username": username, "password": password, "ttl": settings.turn_ttl, "uris": uris}
    )
