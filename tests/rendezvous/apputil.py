"""Running the rendezvous app in a test: the store a parametrized fixture asks for, and
the app served on a free loopback port for the ``async with`` block."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import test_utils
from aiohttp.test_utils import TestClient, TestServer

from rendezvous.app import create_app
from rendezvous.front_door import FrontDoorSite
from rendezvous.settings import RendezvousSettings

FRONT_ENDS = ("lean", "aiohttp")  # who serves /v1/ws: the front door, or aiohttp's route


class FrontDoorServer(TestServer):
    """A ``TestServer`` that listens as ``natkit rendezvous`` does: each connection
    through the front door (``rendezvous.front_door``), WebSocket upgrades on the lean
    listener. (aiohttp's test server builds its site from ``test_utils.SockSite``; the
    product's site takes its place while this one starts.)"""

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        plain = test_utils.SockSite
        test_utils.SockSite = FrontDoorSite  # type: ignore[misc]
        try:
            await super().start_server(loop=loop, **kwargs)
        finally:
            test_utils.SockSite = plain  # type: ignore[misc]


def client_of(app: Any, front: str = "lean") -> TestClient[Any, Any]:
    """A client of ``app`` served by ``front`` (one of ``FRONT_ENDS``)."""
    server = FrontDoorServer(app) if front == "lean" else TestServer(app)
    return TestClient(server)


def store_url(request: pytest.FixtureRequest, backend: str) -> str:
    """``"memory"``, or the URL of the test's real redis-server for ``"redis"``."""
    return "memory" if backend == "memory" else request.getfixturevalue("redis_url")


@asynccontextmanager
async def serving(
    settings: RendezvousSettings, now: list[float] | None = None, front: str = "lean"
) -> AsyncIterator[TestClient[Any, Any]]:
    """The app on ``settings``, its clock ``now[0]`` (a list the test moves) or the wall
    clock, served as ``natkit rendezvous`` serves it (``front="aiohttp"``: by aiohttp
    alone)."""
    clock = time.time if now is None else (lambda: now[0])
    client = client_of(create_app(settings, clock=clock), front)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def address(client: TestClient[Any, Any]) -> tuple[str, int]:
    """Where ``client``'s server listens (the API port)."""
    port = client.port
    if port is None:
        raise RuntimeError("the server is not started")
    return client.host, port
