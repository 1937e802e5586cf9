"""Servers on the lab's public segment: natkit's relay (STUN with RFC 5780 on both server
addresses) and coturn, each a process in ``lab.public``, stopped when the block ends."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from aioice import stun

from tests.natlab.lab import Lab

STUN_PORT = 3478
ALT_PORT = 3479


def _binding_request() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    return bytes(message)


def _wait_for_stun(lab: Lab, server: tuple[str, int], process: subprocess.Popen[bytes]) -> None:
    """Until ``server`` answers a Binding request from the public segment (15 s)."""
    deadline = time.monotonic() + 15
    with lab.public.socket() as sock:
        sock.settimeout(0.2)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the STUN server exited ({process.returncode}) before serving")
            sock.sendto(_binding_request(), server)
            try:
                sock.recvfrom(2048)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no STUN answer from {server} within 15 s") from None


@contextmanager
def _serving(lab: Lab, argv: Sequence[str]) -> Iterator[tuple[str, int]]:
    process = lab.public.popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        server = (lab.server_ip(0), STUN_PORT)
        _wait_for_stun(lab, server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def natkit_relay(lab: Lab) -> Iterator[tuple[str, int]]:
    """``natkit relay`` on 203.0.113.1:3478, RFC 5780 alternate 203.0.113.2:3479."""
    argv = [sys.executable, "-m", "natkit", "relay"]
    argv += ["--listen", f"{lab.server_ip(0)}:{STUN_PORT}"]
    argv += ["--alt-listen", f"{lab.server_ip(1)}:{ALT_PORT}", "--log-level", "warning"]
    with _serving(lab, argv) as server:
        yield server


@contextmanager
def coturn(lab: Lab) -> Iterator[tuple[str, int]]:
    """coturn's STUN on 203.0.113.1:3478 and .2 (it answers RFC 5780 with two addresses,
    its alternate port the listening port + 1)."""
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        raise RuntimeError("coturn is not installed (apt-get install coturn)")
    argv = [turnserver, "-n", "--no-cli", "--no-tls", "--no-dtls", "--stun-only"]
    argv += ["-L", lab.server_ip(0), "-L", lab.server_ip(1), "-p", str(STUN_PORT)]
    argv += ["--alt-listening-port", str(ALT_PORT), "--log-file", "stdout", "--simple-log"]
    with _serving(lab, argv) as server:
        yield server
