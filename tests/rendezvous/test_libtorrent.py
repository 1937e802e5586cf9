"""A real BitTorrent client (libtorrent, written by others) announces to the rendezvous
server's HTTP and UDP trackers, receives the other peer, and downloads a file from it - all on
127.0.0.1, with DHT, local peer discovery, UPnP and NAT-PMP off."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rendezvous import keys
from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings
from tests.netutil import free_tcp_port

lt = pytest.importorskip("libtorrent")
# libtorrent 2.1 deprecates add_files/create_torrent(file_storage); they still work.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")


def session(port: int) -> Any:
    return lt.session(
        {
            "listen_interfaces": f"127.0.0.1:{port}",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            "announce_to_all_trackers": True,
            "alert_mask": 0,
        }
    )


def add(session: Any, info: Any, save_path: Path, *, seed: bool = False) -> Any:
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(save_path)
    if seed:
        params.flags |= lt.torrent_flags.seed_mode
    return session.add_torrent(params)


def make_torrent(content: Path, tracker: str) -> Any:
    storage = lt.file_storage()
    lt.add_files(storage, str(content))
    torrent = lt.create_torrent(storage, piece_size=16 * 1024)
    torrent.add_tracker(tracker)
    lt.set_piece_hashes(torrent, str(content.parent))
    return lt.torrent_info(lt.bencode(torrent.generate()))


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("transport", ["http", "http-port", "udp"])
async def test_libtorrent_peers_find_each_other_and_download(
    tmp_path: Path, transport: str
) -> None:
    settings = RendezvousSettings(
        store="memory", secret="t", udp_tracker="127.0.0.1:0", http_tracker="127.0.0.1:0"
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    seeder, leecher = session(free_tcp_port()), session(free_tcp_port())
    try:
        if transport == "http":
            tracker = f"http://127.0.0.1:{client.port}/announce"
        elif transport == "http-port":
            port = client.app[keys.HTTP_TRACKER].sockname[1]
            tracker = f"http://127.0.0.1:{port}/announce"
        else:
            port = client.app[keys.UDP_TRACKER].sockname[1]
            tracker = f"udp://127.0.0.1:{port}/announce"
        (tmp_path / "seed").mkdir()
        (tmp_path / "leech").mkdir()
        content = tmp_path / "seed" / "data.bin"
        content.write_bytes(os.urandom(200_000))
        info = make_torrent(content, tracker)
        seeding = add(seeder, info, tmp_path / "seed", seed=True)
        await wait_for(lambda: seeding.status().is_seeding, 20, "the seeder to seed")
        seeding.force_reannounce()
        downloading = add(leecher, info, tmp_path / "leech")
        await wait_for(lambda: downloading.status().is_seeding, 30, "the download to finish")
        assert (tmp_path / "leech" / "data.bin").read_bytes() == content.read_bytes()
        assert downloading.status().current_tracker == tracker
        # The tracker saw both: a scrape counts two seeders now (after re-announcing).
        downloading.force_reannounce()
        info_hash = bytes.fromhex(str(info.info_hash()))

        async def seeders() -> int:
            from urllib.parse import quote_from_bytes

            from rendezvous.bittorrent import bencode

            response = await client.get(f"/scrape?info_hash={quote_from_bytes(info_hash)}")
            decoded: Any = bencode.decode(await response.read())
            return int(decoded[b"files"][info_hash][b"complete"])

        deadline = time.monotonic() + 20
        while await seeders() < 2:
            assert time.monotonic() < deadline, "the leecher never announced as a seeder"
            await asyncio.sleep(0.2)
    finally:
        for s in (seeder, leecher):
            s.pause()
        await client.close()
