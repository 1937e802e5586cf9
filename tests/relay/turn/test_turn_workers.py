"""``--workers 2``: a worker that dies takes only its own clients' allocations with it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.request
from typing import Any

from aioice.turn import create_turn_endpoint

from tests.netutil import free_tcp_port, free_udp_port
from tests.relay.relay_process import natkit_relay, wait_until_live
from tests.relay.turn.test_turn_sockets import PASSWORD, USER, Collector


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def worker_pids(supervisor: int) -> list[int]:
    pids = []
    for task in os.listdir(f"/proc/{supervisor}/task"):
        with open(f"/proc/{supervisor}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    workers = []
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                workers.append(pid)
    return workers


async def wait_for(predicate: Any, seconds: float = 40.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def relays(transport: Any, protocol: Collector, peer: socket.socket) -> bool:
    """Does data still flow through this allocation, both ways?"""
    loop = asyncio.get_running_loop()
    relayed = transport.get_extra_info("sockname")
    transport.sendto(b"ping", peer.getsockname())
    try:
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 1.0)
        await loop.sock_sendto(peer, b"pong", relayed)
        data, _ = await asyncio.wait_for(protocol.queue.get(), 1.0)
    except TimeoutError:
        return False
    return data == b"pong"


async def test_restarting_a_worker_keeps_the_other_workers_clients() -> None:
    port, metrics = free_udp_port(), free_tcp_port()
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", "--user", f"{USER}:{PASSWORD}", "--workers", "2"),
        *("--allow-peer", "127.0.0.0/8", "--metrics-listen", f"127.0.0.1:{metrics}"),
        *("--log-level", "warning"),
        wait_on=("127.0.0.1", port),
    ) as relay:
        wait_until_live(metrics)
        clients = []
        for _ in range(10):
            clients.append(
                await create_turn_endpoint(
                    Collector, server_addr=("127.0.0.1", port), username=USER, password=PASSWORD
                )
            )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            try:
                assert [await relays(t, p, peer) for t, p in clients] == [True] * 10
                await wait_for(lambda: scrape(metrics, "natkit_turn_allocations") == 10)
                victim = worker_pids(relay.process.pid)[0]
                os.kill(victim, 9)
                await wait_for(lambda: victim not in worker_pids(relay.process.pid))
                wait_until_live(metrics)
                await asyncio.sleep(1.5)  # the gauges come from the workers' reports
                survivors = scrape(metrics, "natkit_turn_allocations")
                working = [await relays(t, p, peer) for t, p in clients]
                # The surviving worker's clients still relay; the dead worker's do not.
                assert sum(working) == survivors, (working, survivors)
                assert 0 < survivors < 10  # both workers had some (fails w.p. 2**-9)
            finally:
                for transport, _ in clients:
                    transport.close()
