"""``--workers N``: N processes answering on the same ports through SO_REUSEPORT.

The supervisor (the process that runs ``natkit relay``) checks the ports are free, binds
every worker's listening UDP sockets itself (SO_REUSEPORT, in a fixed order) and hands
each worker its own, starts the workers, restarts one that dies, and sums their counters
for ``/metrics``: each worker sends a snapshot of its ``RelayCounters`` once a second over
a pipe.

TURN allocations live in the worker that owns the client's 5-tuple: SO_REUSEPORT hashes a
client's datagrams to the same socket, so to the same worker, every time. Because the
supervisor keeps every socket open, a dead worker's sockets stay in the kernel's
reuseport groups and its successor takes them over: no client of another worker moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

from relay.eventloop import loop_factory
from relay.runtime import RelayCounters, RelayRuntime
from relay.server.listeners import Listener
from relay.server.udp import bind_udp
from relay.settings import RelaySettings

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0
RESTART_BACKOFF = 1.0


def check_ports_free(settings: RelaySettings, listeners: Sequence[Listener]) -> None:
    """Raise ``OSError`` if any address the workers will listen on is taken (their
    SO_REUSEPORT would otherwise silently share it with a stranger)."""
    for listener in listeners:
        bind_udp(listener.address, reuse_port=False).close()
    streams = [*(settings.listen if settings.tcp else []), *settings.tls_listen]
    for endpoint in streams:
        with socket.socket(endpoint.family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((endpoint.host, endpoint.port))


def _worker_main(
    settings: RelaySettings,
    listeners: Sequence[Listener],
    sockets: Sequence[socket.socket],
    nonce_secret: bytes,
    conn: multiprocessing.connection.Connection,
) -> None:
    """Entry point of one worker process."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {os.getpid()}]: %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_worker_serve(settings, listeners, sockets, nonce_secret, conn))


async def _worker_serve(
    settings: RelaySettings,
    listeners: Sequence[Listener],
    sockets: Sequence[socket.socket],
    nonce_secret: bytes,
    conn: multiprocessing.connection.Connection,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # The supervisor never writes to us: readability means it went away (EOF).
    loop.add_reader(conn.fileno(), stop.set)
    runtime = RelayRuntime(
        settings, listeners, nonce_secret=nonce_secret, reuse_port=True, bound=sockets
    )
    await runtime.start()
    conn.send(("ready", os.getpid()))
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_INTERVAL)
            try:
                conn.send(("counters", runtime.snapshot()))
            except OSError:
                break
    finally:
        await runtime.stop()


class _Slot:
    __slots__ = ("conn", "latest", "process", "ready", "started")

    def __init__(self, process: BaseProcess, conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn
        self.latest = RelayCounters()
        self.ready = False
        self.started = time.monotonic()


class WorkerPool:
    """Starts, watches and stops the worker processes."""

    def __init__(self, settings: RelaySettings, listeners: Sequence[Listener]) -> None:
        self._settings = settings
        self._listeners = tuple(listeners)
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: list[_Slot | None] = [None] * settings.workers
        self._retired = RelayCounters()  # totals of workers that have exited
        # One nonce secret for every worker, so a restarted worker still accepts the
        # nonces its predecessor issued (RFC 8489 §9.2: nonces are the server's).
        self._nonce_secret = os.urandom(32)
        self._watcher: asyncio.Task[None] | None = None
        self._sockets: list[list[socket.socket]] = []  # per worker, one per listener

    async def start(self, timeout: float = 30.0) -> None:
        """Start every worker and wait until each serves its sockets."""
        check_ports_free(self._settings, self._listeners)
        for _ in self._slots:
            self._sockets.append([bind_udp(x.address, reuse_port=True) for x in self._listeners])
        for i in range(len(self._slots)):
            self._spawn(i)
        deadline = time.monotonic() + timeout
        while not all(slot is not None and slot.ready for slot in self._slots):
            if time.monotonic() > deadline:
                raise RuntimeError("relay workers did not start in time")
            for i, slot in enumerate(self._slots):
                if slot is not None and not slot.process.is_alive():
                    raise RuntimeError(f"relay worker {i} exited during start-up")
            await asyncio.sleep(0.02)
        self._watcher = asyncio.create_task(self._watch())

    def _spawn(self, i: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main,
            args=(
                self._settings,
                self._listeners,
                self._sockets[i],
                self._nonce_secret,
                child_conn,
            ),
            name=f"natkit-relay-worker-{i}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        slot = _Slot(process, parent_conn)
        self._slots[i] = slot
        asyncio.get_running_loop().add_reader(parent_conn.fileno(), self._on_message, slot)

    def _on_message(self, slot: _Slot) -> None:
        try:
            kind, value = slot.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(slot.conn.fileno())
            return
        if kind == "ready":
            slot.ready = True
        elif kind == "counters":
            slot.latest = value

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for i, slot in enumerate(self._slots):
                if slot is None or slot.process.is_alive():
                    continue
                log.error(
                    "relay worker %d (pid %s) exited with %s; restarting",
                    i,
                    slot.process.pid,
                    slot.process.exitcode,
                )
                self._retire(slot)
                if time.monotonic() - slot.started < RESTART_BACKOFF:
                    await asyncio.sleep(RESTART_BACKOFF)
                self._spawn(i)

    def _retire(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(slot.conn.fileno())
        # Counters of a dead worker still count; its gauges (allocations now) do not.
        slot.latest.turn.clear_gauges()
        self._retired.merge(slot.latest)
        slot.conn.close()

    def alive(self) -> int:
        """Workers running with their sockets bound (``/livez`` wants all of them)."""
        return sum(1 for s in self._slots if s is not None and s.ready and s.process.is_alive())

    def totals(self) -> RelayCounters:
        total = RelayCounters()
        total.merge(self._retired)
        for slot in self._slots:
            if slot is not None:
                total.merge(slot.latest)
        return total

    async def stop(self, timeout: float = 5.0) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        slots = [s for s in self._slots if s is not None]
        for slot in slots:
            if slot.process.is_alive():
                slot.process.terminate()
        deadline = time.monotonic() + timeout
        for slot in slots:
            while slot.process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(0.1)
            self._retire(slot)
        self._slots = [None] * len(self._slots)
        for sockets in self._sockets:
            for sock in sockets:
                sock.close()
        self._sockets.clear()
