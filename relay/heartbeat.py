"""The relay directory, relay side: heartbeats to the rendezvous server.

Every ``--heartbeat-interval`` seconds the relay PUTs ``/v1/relays/<relay_id>`` with its
TURN URIs, region and load (allocations / --max-allocations). The request is signed with
the TURN REST secret the relay and the rendezvous share (``X-Natkit-Relay-Signature:
<unix time>.<hex HMAC-SHA256(secret, time + "\\n" + body)>``); the rendezvous accepts it
within ``MAX_SKEW`` seconds and keeps the entry for three intervals, so a relay that stops
drops out of the directory on its own. ``sign``/``check`` are the one definition of the
signature, used by both servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence

import aiohttp

from relay.runtime import RelayCounters
from relay.settings import RelaySettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Natkit-Relay-Signature"
MAX_SKEW = 60.0
MIN_TTL = 5.0  # the shortest directory entry the rendezvous keeps


def _mac(secret: str, stamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, now: float) -> str:
    stamp = str(int(now))
    return f"{stamp}.{_mac(secret, stamp, body)}"


def check(secrets: Sequence[str], header: str, body: bytes, now: float) -> str | None:
    """Why ``header`` does not sign ``body`` with one of ``secrets`` now, or ``None``."""
    stamp, _, mac = header.partition(".")
    if not stamp.isdigit() or len(mac) != 64:
        return f"{SIGNATURE_HEADER} must be <unix time>.<64 hex digits>"
    if abs(now - int(stamp)) > MAX_SKEW:
        return f"{SIGNATURE_HEADER} is more than {MAX_SKEW:.0f} s old or ahead"
    if not any(hmac.compare_digest(mac, _mac(s, stamp, body)) for s in secrets if s):
        return f"{SIGNATURE_HEADER} does not match: another secret?"
    return None


def relay_uris(settings: RelaySettings) -> list[str]:
    """The TURN URIs this relay serves (RFC 7065), at ``--public-host``, else the external
    IP, else each specific ``--listen`` address."""
    uris: list[str] = []
    public = settings.public_host or next((p for p, _ in settings.external_ips()), "")
    for endpoint in settings.listen:
        host = public or ("" if endpoint.is_wildcard else endpoint.host)
        if not host:
            continue
        shown = f"[{host}]" if ":" in host else host
        uris.append(f"turn:{shown}:{endpoint.port}?transport=udp")
        if settings.tcp:
            uris.append(f"turn:{shown}:{endpoint.port}?transport=tcp")
    for endpoint in settings.tls_listen:
        host = public or ("" if endpoint.is_wildcard else endpoint.host)
        if host:
            shown = f"[{host}]" if ":" in host else host
            uris.append(f"turns:{shown}:{endpoint.port}?transport=tcp")
    return list(dict.fromkeys(uris))


async def heartbeats(
    settings: RelaySettings, totals: Callable[[], RelayCounters], stop: asyncio.Event
) -> None:
    """Heartbeat until ``stop``; failures are logged and retried at the next beat."""
    uris = relay_uris(settings)
    if not uris:
        log.warning("no heartbeats: set --public-host (the relay listens on a wildcard)")
        return
    if not settings.auth_secret:
        log.warning("no heartbeats: --rendezvous-url needs --auth-secret")
        return
    relay_id = f"{settings.public_host or socket.gethostname()}:{settings.listen[0].port}"
    url = f"{settings.rendezvous_url.rstrip('/')}/v1/relays/{relay_id}"
    ttl = max(MIN_TTL, 3 * settings.heartbeat_interval)
    timeout = aiohttp.ClientTimeout(total=max(2.0, settings.heartbeat_interval))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            load = totals().turn.allocations / max(1, settings.max_allocations)
            beat = {"region": settings.region, "uris": uris, "load": round(load, 4), "ttl": ttl}
            body = json.dumps(beat).encode()
            headers = {
                SIGNATURE_HEADER: sign(settings.auth_secret[0], body, time.time()),
                "Content-Type": "application/json",
            }
            try:
                async with session.put(url, data=body, headers=headers) as response:
                    if response.status >= 300:
                        log.warning("heartbeat: %s %s", response.status, await response.text())
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("heartbeat to %s failed: %s", url, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.heartbeat_interval)
