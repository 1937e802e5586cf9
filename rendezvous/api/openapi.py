"""``GET /openapi.json``: the JSON API described as OpenAPI 3.1.

The request bodies' schemas come from the pydantic models that validate them, so the
document cannot drift from what the server accepts; a test checks that every route of
the app is described here and nothing else.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from natkit import __version__
from rendezvous.api.models import JoinBody
from rendezvous.api.relays import Heartbeat

routes = web.RouteTableDef()

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
_SIGNED: list[dict[str, list[str]]] = [{"peerSignature": []}]


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": schema or {"type": "object"}}}
    return {"description": description, "content": content}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json("error", {"$ref": "#/components/schemas/Error"}) for code in codes}


def _param(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


SWARM = _param(
    "swarm",
    "path",
    "swarm name",
    {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
)
PEER_ID = _param(
    "peer_id", "path", "the signer's peer id", {"type": "string", "pattern": "^[a-z2-7]{32}$"}
)
INT = {"type": "integer", "minimum": 0}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/challenge": {
        "get": {
            "summary": "A challenge to sign (valid 60 s)",
            "responses": {"200": _json("the challenge")},
        }
    },
    "/v1/swarms/{swarm}/peers/{peer_id}": {
        "put": {
            "summary": "Join or refresh (a peer can only register itself)",
            "security": _SIGNED,
            "parameters": [SWARM, PEER_ID],
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/JoinBody"}}
                }
            },
            "responses": {
                "200": _json("refreshed"),
                "201": _json("joined"),
                **_errors(400, 401, 403, 503),
            },
        },
        "delete": {
            "summary": "Leave",
            "security": _SIGNED,
            "parameters": [SWARM, PEER_ID],
            "responses": {"204": {"description": "left"}, **_errors(400, 401, 403, 503)},
        },
    },
    "/v1/swarms/{swarm}/peers": {
        "get": {
            "summary": "A random sample of live peers, or with cookie the registrations since",
            "parameters": [
                SWARM,
                _param("numwant", "query", "peers wanted", INT),
                _param("exclude", "query", "a peer id to leave out", {"type": "string"}),
                _param("cookie", "query", "paging cookie ('' to start)", {"type": "string"}),
                _param("limit", "query", "page size", INT),
            ],
            "responses": {"200": _json("peers"), **_errors(400, 503)},
        }
    },
    "/v1/swarms/{swarm}": {
        "get": {
            "summary": "Swarm stats",
            "parameters": [SWARM],
            "responses": {"200": _json("stats"), **_errors(400, 503)},
        }
    },
    "/v1/turn-credentials": {
        "get": {
            "summary": "TURN REST API credentials for the signing peer",
            "security": _SIGNED,
            "parameters": [_param("region", "query", "preferred relay region", {"type": "string"})],
            "responses": {"200": _json("an RTCIceServer"), **_errors(400, 401, 503)},
        }
    },
    "/v1/relays/{relay_id}": {
        "put": {
            "summary": "A relay's heartbeat (signed with the shared TURN secret)",
            "security": [{"relaySignature": []}],
            "parameters": [_param("relay_id", "path", "relay id", {"type": "string"})],
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Heartbeat"}}
                }
            },
            "responses": {"204": {"description": "recorded"}, **_errors(400, 401, 503)},
        }
    },
    "/v1/ws": {
        "get": {
            "summary": "The signaling WebSocket (see the README)",
            "responses": {"101": {"description": "upgraded"}},
        }
    },
    "/announce": {
        "get": {
            "summary": "BitTorrent announce (BEP 3/23/7), bencoded",
            "responses": {"200": {"description": "bencoded"}},
        }
    },
    "/scrape": {
        "get": {
            "summary": "BitTorrent scrape (BEP 48), bencoded",
            "responses": {"200": {"description": "bencoded"}},
        }
    },
    "/livez": {"get": {"summary": "The process answers", "responses": {"200": _json("ok")}}},
    "/readyz": {
        "get": {
            "summary": "The store answers too",
            "responses": {"200": _json("ok"), **_errors(503)},
        }
    },
    "/metrics": {
        "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
    },
    "/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": _json("OpenAPI 3.1")}}
    },
}


def _with_tenant_tokens(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every ``/v1`` operation but the relays' heartbeat acts in the namespace of the
    request's bearer token (a tenant's API key or JWT), or in the public one without it
    (a 401 on servers run with ``--no-public``); each credential is rate-limited (429),
    and a token's ``swarms`` claim may close a swarm (403)."""
    described: dict[str, dict[str, Any]] = {}
    for path, operations in paths.items():
        described[path] = {}
        for method, operation in operations.items():
            if path.startswith("/v1/") and not path.startswith("/v1/relays/"):
                own = operation.get("security", [{}])
                operation = {
                    **operation,
                    "security": [{**s, "tenantToken": []} for s in own] + own,
                    "responses": {
                        **operation["responses"],
                        **_errors(401, 429, *((403,) if "{swarm}" in path else ())),
                    },
                }
            described[path][method] = operation
    return described


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "natkit rendezvous", "version": __version__},
        "paths": _with_tenant_tokens(PATHS),
        "components": {
            "schemas": {
                "Error": _ERROR,
                "JoinBody": JoinBody.model_json_schema(),
                "Heartbeat": Heartbeat.model_json_schema(),
            },
            "securitySchemes": {
                "tenantToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a tenant's API key or JWT (rendezvous.tenants); on "
                    "/v1/ws also as ?token=",
                },
                "peerSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Natkit-Signature",
                    "description": "with X-Natkit-Key and X-Natkit-Challenge; see the README",
                },
                "relaySignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Natkit-Relay-Signature",
                },
            },
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
