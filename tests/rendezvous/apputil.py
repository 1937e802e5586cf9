"""Running the rendezvous app in a test: the store a parametrized fixture asks for, and
the app served on a free loopback port for the ``async with`` block."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings


def store_url(request: pytest.FixtureRequest, backend: str) -> str:
    """``"memory"``, or the URL of the test's real redis-server for ``"redis"``."""
    return "memory" if backend == "memory" else request.getfixturevalue("redis_url")


@asynccontextmanager
async def serving(
    settings: RendezvousSettings, now: list[float] | None = None
) -> AsyncIterator[TestClient[Any, Any]]:
    """The app on ``settings``, its clock ``now[0]`` (a list the test moves) or the wall
    clock."""
    clock = time.time if now is None else (lambda: now[0])
    client = TestClient(TestServer(create_app(settings, clock=clock)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
