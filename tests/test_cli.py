"""The ``natkit`` command line: help, ``natkit up``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from tests.netutil import free_tcp_port, free_udp_port
from tests.relay.relay_process import stun_roundtrip, wait_for_stun


def natkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natkit", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_commands_and_environment() -> None:
    top = natkit("--help")
    assert top.returncode == 0
    assert "up" in top.stdout
    assert "relay" in top.stdout
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
    metrics = free_tcp_port()
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_stun(("127.0.0.1", port))
        response = stun_roundtrip(("127.0.0.1", port))
        assert response.attributes["OTHER-ADDRESS"] == ("127.0.0.2", alt)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/livez", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert f"stun:127.0.0.1:{port}" in out
    assert f"stun:127.0.0.2:{alt}" in out
    assert f"http://127.0.0.1:{metrics}/metrics" in out
