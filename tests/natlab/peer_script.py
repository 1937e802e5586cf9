"""A peer for the NAT lab's connectivity tests, run in a host's namespace:

    python -m tests.natlab.peer_script accept  --rendezvous URL --stun HOST:PORT
    python -m tests.natlab.peer_script connect PEER_ID --rendezvous URL --stun HOST:PORT

``accept`` prints ``{"ready": PEER_ID}`` once it listens, then waits for one connection,
answers each ``ping`` datagram with a ``pong`` for a moment and prints its result.
``connect`` connects, sends ``ping`` every 100 ms until a ``pong`` comes back and
prints its result. A result is one JSON line: ``{"ok": true, "path", "connected_path",
"rtt", "elapsed", "remote", "sent", "received"}`` or ``{"ok": false, "error", "message",
"elapsed"}`` (``elapsed``: seconds the connect or accept took, or until it failed;
``connected_path``: the path when it returned, ``path`` the one at the end -- they differ
when the connection upgraded from the relay to a direct path, or fell back).

``--upgrade-wait S``: after the exchange, a connection that is not direct stays up to S
seconds more, while its direct punch is still looking, for that punch to upgrade it (both
sides need it); ``direct_after`` in the result: seconds from ``connect``/``accept``
returning to a direct path (0: it was direct; null: not by the end).

``connect -`` reads the peer id from the first line of stdin once its peer is up (so a
harness can start the dialler while the accepter is still starting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from client_sdk import ConnectError, Peer, PeerConnection

EXCHANGE_FOR = 3.0  # seconds the two sides have to get a datagram across each way


def emit(body: dict[str, Any]) -> None:
    print(json.dumps(body), flush=True)


def result(
    conn: PeerConnection,
    sent: list[str],
    received: list[str],
    connected_path: str | None,
    direct_after: float | None = None,
) -> dict[str, Any]:
    return {
        "ok": True,
        "path": conn.path,
        "connected_path": connected_path,
        "direct_after": direct_after,
        "rtt": conn.rtt,
        "elapsed": conn.elapsed,
        "remote": conn.remote_peer_id,
        "remote_address": list(conn.remote_address or ()),
        "sent": sent,
        "received": received,
    }


async def wait_for_direct(
    conn: PeerConnection, connected_path: str | None, since: float, wait: float
) -> float | None:
    """Seconds from ``since`` (when connect/accept returned) to a direct path: 0 when it
    connected direct, else polled for up to ``wait`` seconds from now while a direct punch
    is still looking (None: not direct by then, the punch gave up, or the connection
    ended)."""
    if connected_path == "direct":
        return 0.0
    deadline = time.monotonic() + wait
    while conn.path != "direct":
        if conn.closed or not conn.has_path("direct") or time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.02)
    return time.monotonic() - since


async def accept(peer: Peer, wait: float, upgrade_wait: float = 0.0) -> dict[str, Any]:
    peer.listen()
    emit({"ready": peer.peer_id})
    try:
        conn = await asyncio.wait_for(peer.accept(), wait)
    except TimeoutError:
        return {"ok": False, "error": "timeout", "message": f"nothing in {wait} s"}
    returned, connected_path = time.monotonic(), conn.path
    sent: list[str] = []
    received: list[str] = []
    async with conn:
        end = time.monotonic() + EXCHANGE_FOR
        while time.monotonic() < end:
            try:
                data = await asyncio.wait_for(conn.recv(), end - time.monotonic())
            except (TimeoutError, ConnectError):  # quiet, or ended
                break
            received.append(data.decode())
            if data.startswith(b"ping"):
                reply = "pong from " + peer.peer_id
                await conn.send(reply.encode())
                sent.append(reply)
                end = min(end, time.monotonic() + 0.5)  # a moment for a lost pong's retry
        direct_after = await wait_for_direct(conn, connected_path, returned, upgrade_wait)
        return result(conn, sent, received, connected_path, direct_after)


async def connect(peer: Peer, target: str, upgrade_wait: float = 0.0) -> dict[str, Any]:
    started = time.monotonic()
    try:
        conn = await peer.connect(target)
    except ConnectError as exc:
        return {
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            "elapsed": time.monotonic() - started,
        }
    returned, connected_path = time.monotonic(), conn.path
    sent: list[str] = []
    received: list[str] = []
    async with conn:
        end = time.monotonic() + EXCHANGE_FOR
        while time.monotonic() < end and not received:
            ping = f"ping {len(sent)} from {peer.peer_id}"
            await conn.send(ping.encode())
            sent.append(ping)
            try:
                data = await asyncio.wait_for(conn.recv(), 0.1)
            except TimeoutError:
                continue
            except ConnectError:
                break
            received.append(data.decode())
        direct_after = await wait_for_direct(conn, connected_path, returned, upgrade_wait)
        return result(conn, sent, received, connected_path, direct_after)


async def read_peer_id() -> str:
    """``connect -``: the peer id, the first line of stdin."""
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["accept", "connect"])
    parser.add_argument("peer_id", nargs="?")
    parser.add_argument("--rendezvous", required=True)
    parser.add_argument("--stun", action="append", default=[])
    parser.add_argument("--punch-timeout", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=30.0, help="accept: give up after")
    parser.add_argument(
        "--upgrade-wait", type=float, default=0.0, help="seconds to wait for a direct upgrade"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    async with Peer(args.rendezvous, stun=args.stun, punch_timeout=args.punch_timeout) as peer:
        if args.role == "accept":
            outcome = await accept(peer, args.wait, args.upgrade_wait)
        else:
            if not args.peer_id:
                parser.error("connect needs a PEER_ID")
            target = await read_peer_id() if args.peer_id == "-" else args.peer_id
            outcome = await connect(peer, target, args.upgrade_wait)
    emit(outcome)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
