"""Every error the API answers is JSON: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import http
import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from rendezvous import keys
from rendezvous.store import StoreError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the client: HTTP ``status``, a stable ``code``, a message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_http(error: ApiError, *, close: bool) -> bytes:
    """``error`` as a whole HTTP/1.1 response, for the listeners that write their own."""
    body = error_body(error.code, error.message)
    headers = {**error.headers, **({"Connection": "close"} if close else {})}
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = error_body(code, message)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def store_unavailable() -> ApiError:
    return ApiError(503, "store_unavailable", "the peer store is unavailable")


def validation_message(exc: ValidationError) -> str:
    """The first problem of a pydantic error, with where it is: ``field.sub: message``."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except ValidationError as exc:
        return error_response(400, "invalid", validation_message(exc))
    except StoreError as exc:
        log.warning("store unavailable: %s", exc)
        request.app[keys.METRICS].store_errors.inc()
        down = store_unavailable()
        return error_response(down.status, down.code, down.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.text or exc.reason)
