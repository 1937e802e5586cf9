"""Test helpers: run ``natkit relay`` in a subprocess, send STUN over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from aioice import stun as aioice_stun

from relay.app import serve
from relay.settings import RelaySettings


def binding_request() -> bytes:
    msg = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
    )
    msg.add_fingerprint()
    return bytes(msg)


def stun_roundtrip(
    server: tuple[str, int], payload: bytes | None = None, *, timeout: float = 1.0
) -> aioice_stun.Message:
    """Send one request from a fresh socket and parse the answer (aioice's parser)."""
    data = payload if payload is not None else binding_request()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, server)
        reply, _ = sock.recvfrom(4096)
    return aioice_stun.parse_message(reply)


def wait_until_live(metrics_port: int, deadline: float = 30.0) -> None:
    """Until ``/livez`` answers 200: every worker is serving its sockets."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/livez", timeout=2):
                return
        except OSError:
            if time.monotonic() > end:
                raise AssertionError("workers never all ready") from None
            time.sleep(0.1)


def wait_for_stun(server: tuple[str, int], deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            stun_roundtrip(server, timeout=0.2)
            return
        except OSError:
            if time.monotonic() > end:
                raise


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    args: Sequence[str]

    def output(self) -> str:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return out.decode(errors="replace")


@contextmanager
def natkit_relay(*args: str, wait_on: tuple[str, int] | None = None) -> Iterator[RelayProcess]:
    """``python -m natkit relay ARGS`` until the block ends (SIGTERM, then SIGKILL)."""
    argv = [sys.executable, "-m", "natkit", "relay", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    relay = RelayProcess(process, argv)
    try:
        if wait_on is not None:
            try:
                wait_for_stun(wait_on)
            except OSError:
                raise AssertionError(
                    f"relay did not answer on {wait_on}:\n{relay.output()}"
                ) from None
        yield relay
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextlib.asynccontextmanager
async def running_relay(settings: RelaySettings) -> AsyncIterator[None]:
    """``relay.app.serve`` on this event loop, from bound sockets to a clean stop."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    try:
        if task.done():
            task.result()  # raises what made it stop
            raise AssertionError("relay stopped before it was ready")
        assert ready.is_set(), "relay not ready in 30 s"
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
