"""A peer for the NAT lab's connectivity tests, run in a host's namespace:

    python -m tests.natlab.peer_script accept  --rendezvous URL --stun HOST:PORT
    python -m tests.natlab.peer_script connect PEER_ID --rendezvous URL --stun HOST:PORT

``accept`` prints ``{"ready": PEER_ID}`` once it listens, then waits for one connection,
answers each ``ping`` datagram with a ``pong`` for a moment and prints its result.
``connect`` connects, sends ``ping`` every 100 ms until a ``pong`` comes back and
prints its result. A result is one JSON line: ``{"ok": true, "path", "rtt", "elapsed",
"remote", "sent", "received"}`` or ``{"ok": false, "error", "message", "elapsed"}``
(``elapsed``: seconds the connect or accept took, or until it failed).
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


def result(conn: PeerConnection, sent: list[str], received: list[str]) -> dict[str, Any]:
    return {
        "ok": True,
        "path": conn.path,
        "rtt": conn.rtt,
        "elapsed": conn.elapsed,
        "remote": conn.remote_peer_id,
        "remote_address": list(conn.remote_address or ()),
        "sent": sent,
        "received": received,
    }


async def accept(peer: Peer, wait: float) -> dict[str, Any]:
    peer.listen()
    emit({"ready": peer.peer_id})
    try:
        conn = await asyncio.wait_for(peer.accept(), wait)
    except TimeoutError:
        return {"ok": False, "error": "timeout", "message": f"nothing in {wait} s"}
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
        return result(conn, sent, received)


async def connect(peer: Peer, target: str) -> dict[str, Any]:
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
        return result(conn, sent, received)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["accept", "connect"])
    parser.add_argument("peer_id", nargs="?")
    parser.add_argument("--rendezvous", required=True)
    parser.add_argument("--stun", action="append", default=[])
    parser.add_argument("--punch-timeout", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=30.0, help="accept: give up after")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    async with Peer(args.rendezvous, stun=args.stun, punch_timeout=args.punch_timeout) as peer:
        if args.role == "accept":
            outcome = await accept(peer, args.wait)
        else:
            if not args.peer_id:
                parser.error("connect needs a PEER_ID")
            outcome = await connect(peer, args.peer_id)
    emit(outcome)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
