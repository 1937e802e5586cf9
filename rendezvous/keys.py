"""The typed application keys of the rendezvous aiohttp app (one place for all of them)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from rendezvous.bittorrent.connection_ids import ConnectionIds
from rendezvous.challenges import Challenges
from rendezvous.http_tracker import HttpTracker, HttpTrackerServer
from rendezvous.metrics import RendezvousMetrics
from rendezvous.settings import RendezvousSettings
from rendezvous.signaling.hub import Hub
from rendezvous.signaling.session import Signaling
from rendezvous.store import Store
from rendezvous.tenants import Access, Tenants
from rendezvous.udp_tracker import UdpTrackerSocket

SETTINGS = web.AppKey("settings", RendezvousSettings)
STORE = web.AppKey("store", Store)
CHALLENGES = web.AppKey("challenges", Challenges)
METRICS = web.AppKey("metrics", RendezvousMetrics)
HUB = web.AppKey("hub", Hub)  # this instance's signaling sockets
SIGNALING = web.AppKey("signaling", Signaling)  # what every signaling socket shares
CONNECTION_IDS = web.AppKey("connection_ids", ConnectionIds)  # BEP 15, stateless
UDP_TRACKER = web.AppKey("udp_tracker", UdpTrackerSocket)  # when --udp-tracker is set
HTTP_TRACKER = web.AppKey("http_tracker", HttpTrackerServer)  # when --http-tracker is set
TRACKER = web.AppKey("tracker", HttpTracker)  # what /announce and /scrape answer
TENANTS = web.AppKey("tenants", Tenants)  # --tenants-file; empty: one public namespace
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")  # Unix time, as every TTL

ACCESS = web.RequestKey("access", Access)  # the namespace a request acts in (api.access)
