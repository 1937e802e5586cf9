"""The Redis signaling bus on a real redis-server: peers attached at the same moment on a
fresh bus all get what is published to them (redis-py's PubSub opens its connection on
the first subscribe; two at once used to open two, and the first one's channels were
lost while PUBLISH still counted them)."""

from __future__ import annotations

import asyncio

from rendezvous.signaling.bus import RedisBus

PEERS = [f"peer{n:02d}" for n in range(8)]


async def attach_all_at_once_and_publish(redis_url: str) -> dict[str, bytes]:
    """What each of ``PEERS``, attached at once on a fresh bus, heard (within 5 s)."""
    bus = RedisBus(redis_url)
    heard: dict[str, bytes] = {}
    got_all = asyncio.Event()

    def deliver(peer_id: str, payload: bytes) -> None:
        heard[peer_id] = payload
        if len(heard) == len(PEERS):
            got_all.set()

    await bus.start(deliver)
    try:
        await asyncio.gather(*(bus.attach(peer) for peer in PEERS))
        counts = [await bus.publish(peer, peer.encode()) for peer in PEERS]
        assert counts == [1] * len(PEERS)
        await asyncio.wait_for(got_all.wait(), 5)
    except TimeoutError:
        pass
    finally:
        await bus.close()
    return heard


async def test_peers_attached_at_once_on_a_fresh_bus_all_hear_their_messages(
    redis_url: str,
) -> None:
    for _ in range(3):  # the race needs a fresh bus each time
        heard = await attach_all_at_once_and_publish(redis_url)
        assert heard == {peer: peer.encode() for peer in PEERS}
