"""``Peer``'s identity: generated, given, or kept in a file (created with mode 0600 and
loaded back as the same peer; a PEM that is not an Ed25519 key is refused);
``connect``/``accept`` are typed placeholders until the connectivity layer lands."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from client_sdk import Peer
from client_sdk.identity import Identity, IdentityError
from client_sdk.peer import load_identity
from tests.client_sdk.test_peer_api import FAST, rendezvous, url_of


def test_identity_file_is_created_private_and_loaded_back(tmp_path: Path) -> None:
    path = tmp_path / "peer.key"
    first = Peer("http://127.0.0.1:1", identity_file=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = Peer("http://127.0.0.1:1", identity_file=str(path))
    assert again.peer_id == first.peer_id
    assert again.identity.private_bytes() == first.identity.private_bytes()
    assert len(first.peer_id) == 32


def test_identity_given_or_generated(tmp_path: Path) -> None:
    identity = Identity.generate()
    assert Peer("http://127.0.0.1:1", identity=identity).peer_id == identity.peer_id
    assert Peer("http://127.0.0.1:1").peer_id != Peer("http://127.0.0.1:1").peer_id
    with pytest.raises(ValueError, match="not both"):
        Peer("http://127.0.0.1:1", identity=identity, identity_file=tmp_path / "k")
    with pytest.raises(ValueError, match="rendezvous URL"):
        Peer("ftp://example")
    with pytest.raises(ValueError, match="at least one"):
        Peer([])


def test_a_file_that_is_not_an_ed25519_key_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello")
    with pytest.raises(IdentityError, match="PEM"):
        load_identity(garbage)
    other = tmp_path / "ec.key"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(IdentityError, match="Ed25519"):
        load_identity(other)


def test_a_world_readable_key_is_loaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "peer.key"
    created = load_identity(path)
    os.chmod(path, 0o644)  # as a Kubernetes Secret volume mounts it by default
    assert load_identity(path).peer_id == created.peer_id
    assert "readable by others" in caplog.text


async def test_the_file_identity_is_the_one_the_server_sees(tmp_path: Path) -> None:
    async with rendezvous() as server:
        path = tmp_path / "peer.key"
        async with Peer(url_of(server), identity_file=path, backoff=FAST) as peer:
            await peer.join("room")
        async with (
            Peer(url_of(server), identity_file=path, backoff=FAST) as same,
            Peer(url_of(server), backoff=FAST) as other,
        ):
            await same.join("room")
            [entry] = (await other.peers("room")).peers
            assert entry.peer_id == same.peer_id == load_identity(path).peer_id
