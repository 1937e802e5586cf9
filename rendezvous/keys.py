"""The typed application keys of the rendezvous aiohttp app (one place for all of them)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from rendezvous.challenges import Challenges
from rendezvous.settings import RendezvousSettings
from rendezvous.store import Store

SETTINGS = web.AppKey("settings", RendezvousSettings)
STORE = web.AppKey("store", Store)
CHALLENGES = web.AppKey("challenges", Challenges)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")  # Unix time, as every TTL
