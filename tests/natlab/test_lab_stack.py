"""The whole stack on the lab's public segment -- Redis, the rendezvous server on it, and
a relay heartbeating into it -- reached from behind a NAT: netcheck run there learns the
relay from the rendezvous (a signed request through the NAT) and measures its latency."""

from __future__ import annotations

import json
import sys
import time

from tests.natlab import Lab, Nat
from tests.natlab.conftest import require_lab
from tests.natlab.servers import natkit_relay, redis_server, rendezvous_server

SECRET = "natlab-turn-secret"


def test_netcheck_finds_the_relay_through_the_rendezvous() -> None:
    require_lab()
    with (
        Lab(nats={"home": Nat()}, hosts={"alice": "home"}) as lab,
        redis_server(lab) as store,
        rendezvous_server(lab, store, turn_secret=SECRET) as url,
        natkit_relay(lab, rendezvous_url=url, auth_secret=SECRET) as server,
    ):
        argv = [sys.executable, "-m", "natkit", "netcheck", "--stun", f"{server[0]}:{server[1]}"]
        argv += ["--rendezvous", url, "--json"]
        deadline = time.monotonic() + 15
        while True:  # until the relay's first heartbeat is in the store
            report = json.loads(lab.host("alice").ns.run(*argv))
            if report["relays"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert report["relays_error"] is None
    assert report["public_ipv4"] == lab.router("home").wan_ip
    relays = report["relays"]  # the relay's TURN URIs (UDP, TCP): turn:203.0.113.1:3478?...
    assert relays
    assert {r["uri"].split(":")[1] for r in relays} == {server[0]}
    assert all(r["latency_ms"] is not None for r in relays if "transport=tcp" not in r["uri"])
    assert report["preferred_relay"] in [r["uri"] for r in relays]
