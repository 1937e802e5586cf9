"""``natkit relay`` as a command: workers, metrics, robustness, clean errors."""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest

from tests.netutil import free_tcp_port, free_udp_port
from tests.relay.relay_process import (
    binding_request,
    natkit_relay,
    stun_roundtrip,
    wait_until_live,
)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (
            line.startswith(name + "{") and line.split(" ")[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


@pytest.mark.parametrize("workers", [1, 2])
def test_natkit_relay_survives_garbage_and_counts_it(workers: int) -> None:
    port = free_udp_port()
    metrics_port = free_tcp_port()
    server = ("127.0.0.1", port)
    with natkit_relay(
        "--listen",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--log-level",
        "warning",
        wait_on=server,
    ) as relay:
        garbage = [os.urandom(n) for n in (0, 1, 19, 20, 21, 100, 548, 1400)]
        bad_fp = bytearray(binding_request())
        bad_fp[-1] ^= 0xFF
        garbage += [bytes(bad_fp), b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"\x00" * 12]
        garbage.append(binding_request() + b"\x00" * 3000)  # larger than any STUN datagram
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(50):
                for datagram in garbage:
                    sock.sendto(datagram, server)
        # Still answering, in every worker (fresh sockets hash to different workers).
        for _ in range(20):
            assert stun_roundtrip(server).attributes["XOR-MAPPED-ADDRESS"][0] == "127.0.0.1"
        assert relay.process.poll() is None
        text = ""
        for _ in range(50):  # workers report once a second
            text = scrape(metrics_port)
            if metric(text, 'natkit_stun_requests_total{method="binding"}') >= 21:
                break
            time.sleep(0.1)
        assert metric(text, 'natkit_stun_requests_total{method="binding"}') >= 21
        assert metric(text, 'natkit_stun_dropped_total{reason="bad_fingerprint"}') == 50
        assert metric(text, 'natkit_stun_dropped_total{reason="not_stun"}') >= 50 * 3
        assert metric(text, 'natkit_stun_dropped_total{reason="too_large"}') == 50
        assert metric(text, "natkit_relay_workers") == workers
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/livez", timeout=5) as r:
            assert r.status == 200


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM], ids=["udp", "tcp"])
def test_port_in_use_is_a_clear_error(kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        for workers in ("1", "2"):
            with natkit_relay(
                "--listen", f"127.0.0.1:{port}", "--workers", workers, "--metrics-listen", ""
            ) as relay:
                assert relay.process.wait(20) != 0
                out = relay.output()
                assert "address already in use" in out.lower(), out


def test_invalid_flag_value_is_a_clear_error() -> None:
    with natkit_relay("--listen", "nonsense") as relay:
        assert relay.process.wait(20) == 2
        assert "--listen" in relay.output()


def child_pids(pid: int) -> list[int]:
    pids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def test_dead_worker_is_restarted_and_sigterm_stops_cleanly() -> None:
    port = free_udp_port()
    metrics_port = free_tcp_port()
    server = ("127.0.0.1", port)
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", "--workers", "2"),
        *("--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-level", "info"),
        wait_on=server,
    ) as relay:
        # Every worker serving first: one dying during start-up aborts the start.
        wait_until_live(metrics_port)
        # The workers are spawned interpreters (multiprocessing's spawn_main).
        workers = [p for p in child_pids(relay.process.pid) if b"spawn_main" in cmdline(p)]
        assert len(workers) == 2
        os.kill(workers[0], 9)
        deadline = time.monotonic() + 40  # a spawned worker imports a lot; CI may be busy
        replaced = False
        while time.monotonic() < deadline:
            now = set(child_pids(relay.process.pid))
            if workers[0] not in now and len(now - set(workers)) >= 1:
                text = scrape(metrics_port)
                if metric(text, "natkit_relay_workers") == 2:
                    replaced = True
                    break
            time.sleep(0.1)
        assert replaced
        for _ in range(20):
            assert stun_roundtrip(server).attributes["XOR-MAPPED-ADDRESS"][0] == "127.0.0.1"
        relay.process.terminate()
        assert relay.process.wait(15) == 0
        out = relay.output()
        assert "restarting" in out, out
        assert "relay stopping" in out, out
