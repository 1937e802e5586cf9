"""``natkit connect``: two terminals, one command each, and the lines typed in one appear
in the other -- over an authenticated and encrypted path, direct or through the relay
(``client_sdk.Peer``); a change of path (an upgrade to direct) is shown as it happens.

Without a peer id it listens: it prints its own peer id and the command to run on the
other side, and takes the first connection. With one, it connects to that peer. Then each
line read from standard input goes to the peer as one datagram (UTF-8, at most
``MAX_PAYLOAD`` bytes), and each datagram from the peer is printed as ``peer> line``.
End of input, or the connection ending, ends it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable

from client_sdk import ConnectError, Peer, PeerConnection
from client_sdk.secure import MAX_PAYLOAD

Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


def _read_lines(queue: asyncio.Queue[str | None]) -> None:
    """Standard input's lines into ``queue`` (None at its end), from a daemon thread: a
    blocking read the program need not wait for when the peer ends the conversation."""
    loop = asyncio.get_running_loop()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="natkit-connect-stdin", daemon=True).start()


async def chat(conn: PeerConnection, lines: asyncio.Queue[str | None], say: Say = _say) -> None:
    """Send ``lines`` and print what comes back, until either side ends."""

    async def receive() -> None:
        while True:
            data = await conn.recv()
            say("peer> " + data.decode("utf-8", errors="replace"))

    async def send() -> None:
        while (line := await lines.get()) is not None:
            data = line.encode()
            if not data:
                continue
            if len(data) > MAX_PAYLOAD:
                say(f"(not sent: a line is at most {MAX_PAYLOAD} bytes)")
                continue
            await conn.send(data)

    async def watch() -> None:
        async for change in conn.path_changes():
            if change.path is not None:
                say(f"(path: {change.previous} -> {change.path})")

    receiving = asyncio.create_task(receive())
    sending = asyncio.create_task(send())
    watching = asyncio.create_task(watch())
    try:
        done, _ = await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, ConnectError):
                raise error
    finally:
        for task in (receiving, sending, watching):
            task.cancel()
        await asyncio.gather(receiving, sending, watching, return_exceptions=True)


async def run(
    rendezvous: list[str],
    stun: list[str],
    peer_id: str | None,
    *,
    identity_file: str | None = None,
    token: str | None = None,
    relay_only: bool = False,
    say: Say = _say,
) -> int:
    """The command: 0 after a conversation, 1 when no connection could be made."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    _read_lines(lines)
    async with Peer(
        rendezvous,
        stun=stun,
        identity_file=identity_file,
        token=token,
        direct=not relay_only,
    ) as peer:
        if peer_id is None:
            peer.listen()
            say(f"your peer id: {peer.peer_id}")
            say(f"on the other side, run: natkit connect {peer.peer_id}")
            conn = await peer.accept()
        else:
            try:
                conn = await peer.connect(peer_id)
            except ConnectError as exc:
                say(f"could not connect: {exc}")
                return 1
        async with conn:
            say(f"connected to {conn.remote_peer_id} ({conn.path}); type lines, Ctrl-D ends")
            await chat(conn, lines, say)
    return 0
