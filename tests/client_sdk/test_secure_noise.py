"""Our Noise implementation (client_sdk.secure.handshake) against the official test
vectors, and the rollback the session layer relies on.

The vectors are copied verbatim from the cacophony project's ``vectors/cacophony.txt``
(github.com/haskell-cryptography/cacophony, commit 8ee9d41e34a1a596cfa3ab12aa4069ff87dc1247),
the vector set the Noise wiki lists (with snow's) for Noise revision 34: the three
``*_25519_ChaChaPoly_SHA256`` ones with no PSK. Messages after the handshake are
transport messages under the two ``Split()`` cipher states, with Noise's implicit nonces.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client_sdk.secure.handshake import (
    PATTERNS,
    ChannelError,
    CipherState,
    HandshakeState,
    make_prologue,
)

VECTORS: list[dict[str, Any]] = [
    {
        "protocol_name": "Noise_NN_25519_ChaChaPoly_SHA256",
        "init_prologue": "4a6f686e2047616c74",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": "9223fec1b892ec9d0dc2fb3bbeb261f170d1ea679f9c44ccf34aa131b4f5d97e",
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "4c756477696720766f6e204d69736573"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "a0ff96bdf86b579ef7dbf94e812a7470b903c20a85a87e3a1fe863264ae547"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": "eb1a3e3d80c1792b1bb9cb0e1382f8d8322bfb1ca7c4c8517bb686",
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "c781b198d2a974eb1da2c7d518c000cf6396de87ca540963c03713",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "c77048eb6919fdfe8fe45842bfc5b8d1ff50d1e20c717453ccdfe6176d805b996d"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "61834d7069dcfb7a1adf8d5ac910f83fa04c73a67789895c6f5f995c5db2ce88e49b124178"
                ),
            },
        ],
    },
    {
        "protocol_name": "Noise_IK_25519_ChaChaPoly_SHA256",
        "init_prologue": "4a6f686e2047616c74",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "init_remote_static": "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": "0b0f68fb0c27e03ce9b97565995ed4838cc0581b762ef72b062f6a546419fad7",
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "718da798efbcd91528520204f904b9bd6c7413dccdc214d951e15253e39987f1"
                    "8146e8cd0873654207148333479d4d16c289f0294b29960a72f48e0b7bba2e89"
                    "083169825e59642148d492020664ccf7"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "5361e70b2ed446e6c9ec387d1d6b3b840f194e373979d241b203c4acafccf5"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": "050e9f3c8fac16b68dbce8f8c4bfbf6617c897f9ada4aa29aa19c8",
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "344233a6cabb7141d80f3da2fedc311d9646bbb0f505afe403a667",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "62cdeeb172ad7ade7aa7d9e069da5790f12331bfa00177787a1d0810c67dc3b2b4"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "029bead1b40992327044d409d9a1f3ad8f36c3c452775d557e18bbeb2e8dfcead32d514024"
                ),
            },
        ],
    },
    {
        "protocol_name": "Noise_XX_25519_ChaChaPoly_SHA256",
        "init_prologue": "4a6f686e2047616c74",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "resp_prologue": "4a6f686e2047616c74",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": "c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e",
        "messages": [
            {
                "payload": "4c756477696720766f6e204d69736573",
                "ciphertext": (
                    "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
                    "4c756477696720766f6e204d69736573"
                ),
            },
            {
                "payload": "4d757272617920526f746862617264",
                "ciphertext": (
                    "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
                    "81cbad1f276e038c48378ffce2b65285e08d6b68aaa3629a5a8639392490e5b9"
                    "bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be9b5c412f8a0db50f"
                    "8814c7194e83f23dbd8d162c9326ad"
                ),
            },
            {
                "payload": "462e20412e20486179656b",
                "ciphertext": (
                    "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a8"
                    "0ae475b9df0f169ae80a89be0865b57f58c9fea0d4ec82a286427402f113e4b6"
                    "ae769a1d95941d49b25030"
                ),
            },
            {
                "payload": "4361726c204d656e676572",
                "ciphertext": "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df",
            },
            {
                "payload": "4a65616e2d426170746973746520536179",
                "ciphertext": (
                    "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5"
                ),
            },
            {
                "payload": "457567656e2042f6686d20766f6e2042617765726b",
                "ciphertext": (
                    "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"
                ),
            },
        ],
    },
]


def _key(vector: dict[str, Any], name: str) -> X25519PrivateKey | None:
    if name not in vector:
        return None
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(vector[name]))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_cacophony_vector(vector: dict[str, Any]) -> None:
    pattern = vector["protocol_name"].split("_")[1]
    remote = vector.get("init_remote_static")
    initiator = HandshakeState(
        pattern,
        initiator=True,
        prologue=bytes.fromhex(vector["init_prologue"]),
        s=_key(vector, "init_static"),
        e=_key(vector, "init_ephemeral"),
        rs=bytes.fromhex(remote) if remote else None,
    )
    responder = HandshakeState(
        pattern,
        initiator=False,
        prologue=bytes.fromhex(vector["resp_prologue"]),
        s=_key(vector, "resp_static"),
        e=_key(vector, "resp_ephemeral"),
    )
    assert initiator.protocol_name.decode() == vector["protocol_name"]
    handshake_length = len(PATTERNS[pattern][2])
    ciphers: tuple[CipherState, CipherState, CipherState, CipherState] | None = None
    for index, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        from_initiator = index % 2 == 0
        if index < handshake_length:
            writer, reader = (initiator, responder) if from_initiator else (responder, initiator)
            assert writer.write_message(payload) == expected
            assert reader.read_message(expected) == payload
            if index == handshake_length - 1:
                assert initiator.complete
                assert responder.complete
                assert initiator.handshake_hash.hex() == vector["handshake_hash"]
                assert responder.handshake_hash.hex() == vector["handshake_hash"]
                ciphers = (*initiator.split(), *responder.split())
        else:
            assert ciphers is not None
            i_send, i_recv, r_recv, r_send = ciphers
            sender, receiver = (i_send, r_recv) if from_initiator else (r_send, i_recv)
            assert sender.encrypt_with_ad(b"", payload) == expected
            assert receiver.decrypt_with_ad(b"", expected) == payload


def _xx_pair() -> tuple[HandshakeState, HandshakeState]:
    prologue = make_prologue(b"test", "a" * 32, "b" * 32)
    initiator = HandshakeState(
        "XX", initiator=True, prologue=prologue, s=X25519PrivateKey.generate()
    )
    responder = HandshakeState(
        "XX", initiator=False, prologue=prologue, s=X25519PrivateKey.generate()
    )
    return initiator, responder


def test_failed_read_on_a_copy_leaves_the_state_usable() -> None:
    initiator, responder = _xx_pair()
    responder.read_message(initiator.write_message(b""))
    msg2 = responder.write_message(b"hello")
    tampered = msg2[:-1] + bytes([msg2[-1] ^ 1])
    attempt = initiator.copy()
    with pytest.raises(ChannelError, match="authentication"):
        attempt.read_message(tampered)
    assert initiator.read_message(msg2) == b"hello"
    responder.read_message(initiator.write_message(b"done"))
    i_send, i_recv = initiator.split()
    r_recv, r_send = responder.split()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"x")) == b"x"
    assert i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"y")) == b"y"


def test_prologue_mismatch_fails_at_the_first_encrypted_field() -> None:
    initiator = HandshakeState(
        "XX",
        initiator=True,
        prologue=make_prologue(b"one purpose", "a" * 32, "b" * 32),
        s=X25519PrivateKey.generate(),
    )
    responder = HandshakeState(
        "XX",
        initiator=False,
        prologue=make_prologue(b"another purpose", "a" * 32, "b" * 32),
        s=X25519PrivateKey.generate(),
    )
    responder.read_message(initiator.write_message(b""))
    with pytest.raises(ChannelError):
        initiator.read_message(responder.write_message(b""))


def test_turns_and_lengths_are_enforced() -> None:
    initiator, responder = _xx_pair()
    with pytest.raises(ChannelError, match="turn"):
        initiator.read_message(b"\x00" * 32)
    with pytest.raises(ChannelError, match="too short"):
        responder.read_message(b"\x01" * 31)
    with pytest.raises(ChannelError, match="unsupported"):
        HandshakeState("KK", initiator=True, prologue=b"")


def test_low_order_point_is_refused() -> None:
    initiator, _responder = _xx_pair()
    initiator.write_message(b"")
    zero_point = bytes(32)  # a low-order point: X25519 gives the all-zero secret
    with pytest.raises(ChannelError, match="invalid public key"):
        initiator.read_message(zero_point + bytes(48 + 16))
