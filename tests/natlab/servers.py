"""Servers on the lab's public segment, each a process in ``lab.public`` stopped when its
block ends: natkit's relay (STUN with RFC 5780 on both server addresses, optionally
heartbeating into a rendezvous server), coturn, ``redis-server`` and ``natkit
rendezvous`` on it -- the stack a peer behind a lab NAT talks to."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from tests import stunutil
from tests.natlab.lab import Lab
from tests.stunutil import stop, wait_for_stun

STUN_PORT = 3478
ALT_PORT = 3479
REDIS_PORT = 6379
RENDEZVOUS_PORT = 8470


def _wait_until(lab: Lab, ready: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    """Until ``ready()`` (run inside the public namespace) holds (15 s)."""
    deadline = time.monotonic() + 15
    while not lab.public.call(ready):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited ({process.returncode}) before serving")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} not ready within 15 s")
        time.sleep(0.1)


@contextmanager
def _process(lab: Lab, argv: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    process = lab.public.popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield process
    finally:
        stop(process)


@contextmanager
def _serving(lab: Lab, argv: Sequence[str]) -> Iterator[tuple[str, int]]:
    with _process(lab, argv) as process:
        server = (lab.server_ip(0), STUN_PORT)
        wait_for_stun(server, process, open_socket=lab.public.socket)
        yield server


@contextmanager
def natkit_relay(
    lab: Lab, *, rendezvous_url: str | None = None, auth_secret: str | None = None
) -> Iterator[tuple[str, int]]:
    """``natkit relay`` on 203.0.113.1:3478, RFC 5780 alternate 203.0.113.2:3479; with
    ``rendezvous_url`` (and the TURN ``auth_secret`` it shares) it heartbeats there and
    relays TURN over UDP and TCP."""
    argv = [sys.executable, "-m", "natkit", "relay"]
    argv += ["--listen", f"{lab.server_ip(0)}:{STUN_PORT}"]
    argv += ["--alt-listen", f"{lab.server_ip(1)}:{ALT_PORT}", "--log-level", "warning"]
    if rendezvous_url is not None:
        argv += ["--rendezvous-url", rendezvous_url, "--auth-secret", auth_secret or ""]
        argv += ["--public-host", lab.server_ip(0), "--heartbeat-interval", "2"]
        # TURN over TCP too (for hosts whose UDP is blocked); the lab's public segment is
        # TEST-NET-3, which the relay denies as a peer by default: relay-to-relay paths
        # between two allocations on it need it allowed.
        argv += ["--tcp", "--allow-peer", f"{lab.server_ip(0)}/32"]
    with _serving(lab, argv) as server:
        yield server


@contextmanager
def redis_server(lab: Lab) -> Iterator[str]:
    """``redis-server`` on 203.0.113.1:6379 (nothing saved): its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    ip = lab.server_ip(0)
    argv = [binary, "--bind", ip, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no"]
    argv += ["--protected-mode", "no"]  # bound to the lab's public address, no password

    def answers() -> bool:
        try:
            with socket.create_connection((ip, REDIS_PORT), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    with _process(lab, argv) as process:
        _wait_until(lab, answers, process)
        yield f"redis://{ip}:{REDIS_PORT}/0"


@contextmanager
def rendezvous_server(lab: Lab, store: str, *, turn_secret: str) -> Iterator[str]:
    """``natkit rendezvous`` on http://203.0.113.1:8470 over ``store``: its URL."""
    url = f"http://{lab.server_ip(0)}:{RENDEZVOUS_PORT}"
    argv = [sys.executable, "-m", "natkit", "rendezvous", "--host", lab.server_ip(0)]
    argv += ["--port", str(RENDEZVOUS_PORT), "--store", store, "--secret", "natlab"]
    argv += ["--turn-secret", turn_secret, "--log-level", "warning"]

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=0.5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    with _process(lab, argv) as process:
        _wait_until(lab, ready, process)
        yield url


@contextmanager
def coturn(lab: Lab) -> Iterator[tuple[str, int]]:
    """coturn's STUN on 203.0.113.1:3478 and .2 (it answers RFC 5780 with two addresses,
    its alternate port the listening port + 1)."""
    server = (lab.server_ip(0), STUN_PORT)
    args = ["--stun-only", "-L", lab.server_ip(0), "-L", lab.server_ip(1)]
    args += ["-p", str(STUN_PORT), "--alt-listening-port", str(ALT_PORT)]

    def launch(argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return lab.public.popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    with stunutil.coturn(*args, server=server, launch=launch, open_socket=lab.public.socket):
        yield server
