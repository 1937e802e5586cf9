"""The ``natkit`` command line: help, ``natkit up``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from rendezvous.bittorrent.udp import ConnectRequest, ConnectResponse, parse_response
from tests.netutil import free_tcp_port, free_udp_port
from tests.relay.relay_process import stun_roundtrip, wait_for_stun


def natkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natkit", *args], capture_output=True, text=True, timeout=60
    )


def wait_for_http(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                assert response.status == 200
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_rendezvous_command_serves_the_api() -> None:
    port = free_tcp_port()
    env = {**os.environ, "RENDEZVOUS_HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "natkit", "rendezvous", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/swarms/s", timeout=2) as r:
            assert r.read() == b'{"swarm": "s", "peers": 0, "seeders": 0, "leechers": 0}'
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0, out
    assert f"rendezvous listening on http://127.0.0.1:{port}" in out


def test_help_lists_commands_and_environment() -> None:
    top = natkit("--help")
    assert top.returncode == 0
    assert "up" in top.stdout
    assert "relay" in top.stdout
    assert "rendezvous" in top.stdout
    rendezvous = natkit("rendezvous", "--help")
    assert "RENDEZVOUS_STORE" in rendezvous.stdout
    relay = natkit("relay", "--help")
    assert relay.returncode == 0
    for flag, env in (("--listen", "RELAY_LISTEN"), ("--workers", "RELAY_WORKERS")):
        assert flag in relay.stdout
        assert env in relay.stdout


def test_environment_sets_flags() -> None:
    port = free_udp_port()
    env = {**os.environ, "RELAY_LISTEN": f"127.0.0.1:{port}", "RELAY_METRICS_LISTEN": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "natkit", "relay"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_stun(("127.0.0.1", port))
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_up_runs_the_stack_on_loopback() -> None:
    port = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    alt = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    metrics, rendezvous, tracker = free_tcp_port(), free_tcp_port(), free_udp_port()
    http_tracker = free_tcp_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "natkit",
            "up",
            "--listen",
            f"127.0.0.1:{port}",
            "--alt-listen",
            f"127.0.0.2:{alt}",
            "--metrics-listen",
            f"127.0.0.1:{metrics}",
            "--rendezvous-port",
            str(rendezvous),
            "--udp-tracker-port",
            str(tracker),
            "--http-tracker-port",
            str(http_tracker),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_stun(("127.0.0.1", port))
        response = stun_roundtrip(("127.0.0.1", port))
        assert response.attributes["OTHER-ADDRESS"] == ("127.0.0.2", alt)
        wait_for_http(f"http://127.0.0.1:{metrics}/livez")
        wait_for_http(f"http://127.0.0.1:{rendezvous}/readyz")
        # The relay's secret is shared: credentials are refused for want of a signature,
        # not for want of a secret (that would be 503).
        credentials = f"http://127.0.0.1:{rendezvous}/v1/turn-credentials"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(credentials, timeout=2)
        assert refused.value.code == 401
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(3)
            udp.sendto(ConnectRequest(77).encode(), ("127.0.0.1", tracker))
            reply = parse_response(udp.recv(100), ipv6=False)
            assert isinstance(reply, ConnectResponse)
            assert reply.transaction_id == 77
        # The HTTP tracker on its own port answers an announce (bencoded).
        query = "info_hash=" + "%01" * 20 + "&peer_id=" + "%02" * 20 + "&port=6881&left=0"
        query += "&uploaded=0&downloaded=0"
        announce = f"http://127.0.0.1:{http_tracker}/announce?{query}"
        body = urllib.request.urlopen(announce, timeout=3).read()
        assert body.startswith(b"d8:completei1e")
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert f"stun:127.0.0.1:{port}" in out
    assert f"stun:127.0.0.2:{alt}" in out
    assert f"http://127.0.0.1:{metrics}/metrics" in out
    assert f"turn:127.0.0.1:{port}" in out
    assert "password" in out
    assert f"rendezvous http://127.0.0.1:{rendezvous}/v1" in out
    assert f"udp://127.0.0.1:{tracker}/announce" in out
    assert f"http://127.0.0.1:{http_tracker}/announce" in out


async def test_up_turn_works_with_the_printed_credentials() -> None:
    """`natkit up` prints TURN REST credentials; with them aioice's TURN client relays to a
    peer on loopback (loopback peers are allowed on the local stack)."""
    import asyncio
    import re
    import socket

    from aioice.turn import create_turn_endpoint

    from tests.relay.turn.test_turn_sockets import Collector

    port = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    alt = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "natkit", "up", "--listen", f"127.0.0.1:{port}"),
            *("--alt-listen", f"127.0.0.2:{alt}", "--metrics-listen", ""),
            *("--rendezvous-port", str(free_tcp_port())),
            *("--udp-tracker-port", str(free_udp_port())),
            *("--http-tracker-port", str(free_tcp_port())),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = ""
        while "password" not in banner:
            line = process.stdout.readline()
            assert line, banner
            banner += line
        found = re.search(r"username (\S+) password (\S+)", banner)
        assert found is not None, banner
        wait_for_stun(("127.0.0.1", port))
        transport, protocol = await create_turn_endpoint(
            Collector,
            server_addr=("127.0.0.1", port),
            username=found.group(1),
            password=found.group(2),
        )
        loop = asyncio.get_running_loop()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.bind(("127.0.0.1", 0))
                peer.setblocking(False)
                transport.sendto(b"hello", peer.getsockname())
                data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 3)
                assert data == b"hello"
                await loop.sock_sendto(peer, b"back", source)
                data, _ = await asyncio.wait_for(protocol.queue.get(), 3)
                assert data == b"back"
        finally:
            transport.close()
    finally:
        process.terminate()
        process.communicate(timeout=10)
