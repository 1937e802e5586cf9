"""Interop with aioice's STUN implementation (pure bytes, no network)."""

from __future__ import annotations

import pytest
from aioice import stun as aioice_stun

from relay.stun import (
    AttributeType,
    ErrorCode,
    Message,
    MessageClass,
    Method,
    parse,
    short_term_key,
    verify_integrity,
)

pytestmark = pytest.mark.interop

TID = bytes.fromhex("0102030405060708090a0b0c")
KEY = short_term_key("ice-password-1234567890")


def test_our_binding_request_parses_in_aioice() -> None:
    request = Message(
        Method.BINDING,
        MessageClass.REQUEST,
        TID,
        (
            (AttributeType.USERNAME, "remote:local"),
            (AttributeType.PRIORITY, 0x6E0001FF),
            (AttributeType.ICE_CONTROLLING, 0x0123456789ABCDEF),
            (AttributeType.USE_CANDIDATE, True),
            (AttributeType.SOFTWARE, "natkit"),
        ),
    )
    theirs = aioice_stun.parse_message(request.encode(integrity_key=KEY, fingerprint=True))
    assert theirs.message_method == aioice_stun.Method.BINDING
    assert theirs.message_class == aioice_stun.Class.REQUEST
    assert theirs.transaction_id == TID
    assert theirs.attributes["USERNAME"] == "remote:local"
    assert theirs.attributes["PRIORITY"] == 0x6E0001FF
    assert theirs.attributes["ICE-CONTROLLING"] == 0x0123456789ABCDEF
    assert "USE-CANDIDATE" in theirs.attributes
    assert theirs.attributes["SOFTWARE"] == "natkit"
    assert "FINGERPRINT" in theirs.attributes  # aioice verifies it while parsing
    assert theirs.check_message_integrity(KEY)
    assert not theirs.check_message_integrity(b"wrong")


@pytest.mark.parametrize("address", [("198.51.100.7", 40000), ("2001:db8::7", 1)])
def test_our_success_response_parses_in_aioice(address: tuple[str, int]) -> None:
    response = Message(
        Method.BINDING,
        MessageClass.SUCCESS,
        TID,
        ((AttributeType.XOR_MAPPED_ADDRESS, address),),
    )
    theirs = aioice_stun.parse_message(response.encode(integrity_key=KEY, fingerprint=True))
    assert theirs.message_class == aioice_stun.Class.RESPONSE
    assert theirs.attributes["XOR-MAPPED-ADDRESS"] == address
    assert theirs.check_message_integrity(KEY)


@pytest.mark.parametrize("address", [("203.0.113.9", 3478), ("2001:db8:1234::42", 65535)])
def test_aioice_success_response_parses_in_ours(address: tuple[str, int]) -> None:
    theirs = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.RESPONSE,
        transaction_id=TID,
    )
    theirs.attributes["XOR-MAPPED-ADDRESS"] = address
    theirs.attributes["MAPPED-ADDRESS"] = address
    theirs.add_message_integrity(KEY)  # also adds FINGERPRINT
    ours = parse(bytes(theirs))
    assert ours.method == Method.BINDING
    assert ours.message_class == MessageClass.SUCCESS
    assert ours.transaction_id == TID
    assert ours.get(AttributeType.XOR_MAPPED_ADDRESS) == address
    assert ours.get(AttributeType.MAPPED_ADDRESS) == address
    assert ours.has_fingerprint
    assert verify_integrity(ours, KEY)


def test_aioice_request_and_error_parse_in_ours() -> None:
    request = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.REQUEST,
        transaction_id=TID,
    )
    request.attributes["USERNAME"] = "a:b"
    request.attributes["PRIORITY"] = 12345
    request.attributes["ICE-CONTROLLED"] = 2**63 + 5
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(KEY)
    ours = parse(bytes(request))
    assert ours.attributes == (
        (AttributeType.USERNAME, "a:b"),
        (AttributeType.PRIORITY, 12345),
        (AttributeType.ICE_CONTROLLED, 2**63 + 5),
        (AttributeType.USE_CANDIDATE, True),
    )
    assert verify_integrity(ours, KEY)

    error = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.ERROR,
        transaction_id=TID,
    )
    error.attributes["ERROR-CODE"] = (487, "Role Conflict")
    error.add_fingerprint()
    parsed = parse(bytes(error))
    assert parsed.message_class == MessageClass.ERROR
    assert parsed.get(AttributeType.ERROR_CODE) == ErrorCode(487, "Role Conflict")

    # And our error response back into aioice.
    ours_error = Message(
        Method.BINDING,
        MessageClass.ERROR,
        TID,
        ((AttributeType.ERROR_CODE, ErrorCode(401, "Unauthorized")),),
    )
    theirs = aioice_stun.parse_message(ours_error.encode(fingerprint=True))
    assert theirs.attributes["ERROR-CODE"] == (401, "Unauthorized")
