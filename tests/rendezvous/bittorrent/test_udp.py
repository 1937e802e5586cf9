"""UDP tracker codec (BEP 15) and announce options (BEP 41)."""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendezvous.bittorrent import Event, ScrapeEntry, TrackerError
from rendezvous.bittorrent.announce import MAX_COUNTER
from rendezvous.bittorrent.udp import (
    ANNOUNCE_REQUEST_SIZE,
    MAX_SCRAPE_HASHES,
    PROTOCOL_ID,
    Action,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Request,
    Response,
    ScrapeRequest,
    ScrapeResponse,
    UdpAnnounce,
    parse_request,
    parse_response,
    peek_transaction_id,
    quick_announce,
)


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def i32(value: int) -> bytes:
    return value.to_bytes(4, "big", signed=True)


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


CID = 0x1122334455667788
TID = 0xDEADBEEF
INFO_HASH = bytes(range(20))
PEER_ID = b"-NK0100-abcdefghijkl"


def announce_packet(
    *,
    event: int = 2,
    left: bytes = u64(3),
    port: int = 6881,
    num_want: int = -1,
    options: bytes = b"",
) -> bytes:
    """An announce request laid out field by field as in BEP 15's table."""
    return b"".join(
        [
            u64(CID),  # 0   connection_id
            u32(1),  # 8   action: announce
            u32(TID),  # 12  transaction_id
            INFO_HASH,  # 16  info_hash
            PEER_ID,  # 36  peer_id
            u64(1),  # 56  downloaded
            left,  # 64  left
            u64(2),  # 72  uploaded
            u32(event),  # 80  event
            u32(0x0A000001),  # 84  IP address
            u32(0xCAFEBABE),  # 88  key
            i32(num_want),  # 92  num_want
            u16(port),  # 96  port
            options,  # 98  BEP 41 options
        ]
    )


ANNOUNCE = AnnounceRequest(
    connection_id=CID,
    transaction_id=TID,
    info_hash=INFO_HASH,
    peer_id=PEER_ID,
    downloaded=1,
    left=3,
    uploaded=2,
    port=6881,
    event=Event.STARTED,
    ip=0x0A000001,
    key=0xCAFEBABE,
    num_want=-1,
)


def with_url(url_data: bytes | None) -> AnnounceRequest:
    return AnnounceRequest(
        connection_id=CID,
        transaction_id=TID,
        info_hash=INFO_HASH,
        peer_id=PEER_ID,
        downloaded=1,
        left=3,
        uploaded=2,
        port=6881,
        event=Event.STARTED,
        ip=0x0A000001,
        key=0xCAFEBABE,
        num_want=-1,
        url_data=url_data,
    )


# --------------------------------------------------------------------------- requests


def test_constants() -> None:
    assert PROTOCOL_ID == 0x41727101980
    assert [Action.CONNECT, Action.ANNOUNCE, Action.SCRAPE, Action.ERROR] == [0, 1, 2, 3]
    assert ANNOUNCE_REQUEST_SIZE == 98


def test_connect_request_golden() -> None:
    packet = bytes.fromhex("000004172710198000000000deadbeef")
    assert parse_request(packet) == ConnectRequest(TID)
    assert ConnectRequest(TID).encode() == packet


def test_connect_request_may_be_longer() -> None:
    # BEP 15: "Do not expect packets to be exactly of a certain size."
    packet = bytes.fromhex("000004172710198000000000deadbeef") + b"future"
    assert parse_request(packet) == ConnectRequest(TID)


def test_announce_request_golden() -> None:
    packet = announce_packet()
    assert len(packet) == 98
    assert parse_request(packet) == ANNOUNCE
    assert ANNOUNCE.encode() == packet


@pytest.mark.parametrize(
    ("value", "event"),
    [(0, Event.NONE), (1, Event.COMPLETED), (2, Event.STARTED), (3, Event.STOPPED)],
)
def test_announce_events(value: int, event: Event) -> None:
    request = parse_request(announce_packet(event=value))
    assert isinstance(request, AnnounceRequest)
    assert request.event is event


def test_num_want_is_signed() -> None:
    request = parse_request(announce_packet(num_want=-2))
    assert isinstance(request, AnnounceRequest)
    assert request.num_want == -2
    request = parse_request(announce_packet(num_want=200))
    assert isinstance(request, AnnounceRequest)
    assert request.num_want == 200


# BEP 41's three examples for udp://tracker.example.com:80/dir?a=b&c=d and for :80.
BEP41_EXAMPLES: list[tuple[bytes, bytes | None]] = [
    (bytes([0x2, 0xC]) + b"/dir?a=b&c=d", b"/dir?a=b&c=d"),
    (bytes([0x2, 0xC]) + b"/dir?a=b&c=d" + bytes([0x1, 0x1, 0x0]), b"/dir?a=b&c=d"),
    (bytes([0x2, 0x0]), b""),
]


@pytest.mark.parametrize(("options", "url_data"), BEP41_EXAMPLES)
def test_bep41_examples(options: bytes, url_data: bytes | None) -> None:
    assert parse_request(announce_packet(options=options)) == with_url(url_data)


OPTION_CASES: list[tuple[bytes, bytes | None]] = [
    (b"", None),  # no options at all
    (bytes([0x1, 0x1, 0x1]), None),  # only NOPs
    (bytes([0x0]) + bytes([0x2, 0x2]) + b"ab", None),  # nothing after EndOfOptions counts
    (bytes([0x2, 0x3]) + b"/ab" + bytes([0x2, 0x2]) + b"?c", b"/ab?c"),  # concatenated
    (bytes([0x7, 0x3]) + b"xyz" + bytes([0x2, 0x2]) + b"ab", b"ab"),  # unknown type skipped
    (bytes([0xFF, 0x0, 0x2, 0x1]) + b"a", b"a"),  # unknown type with empty data skipped
    (bytes([0x2, 0x1]) + b"a" + bytes([0x0]) + b"garbage", b"a"),
    # Truncated options: the announce stays valid, complete options before are kept.
    (bytes([0x2, 0x5]) + b"abc", None),  # data runs past the end
    (bytes([0x2, 0x2]) + b"ab" + bytes([0x2, 0x5]) + b"x", b"ab"),
    (bytes([0x2]), None),  # length byte missing
    (bytes([0x2, 0x1]) + b"a" + bytes([0x9]), b"a"),  # unknown type, length byte missing
    (bytes([0x9, 0xFF]) + b"x" * 10 + bytes([0x2, 0x1]) + b"a", None),  # unknown type overruns
]


@pytest.mark.parametrize(("options", "url_data"), OPTION_CASES)
def test_announce_options(options: bytes, url_data: bytes | None) -> None:
    assert parse_request(announce_packet(options=options)) == with_url(url_data)


def test_url_data_encoding_is_chunked() -> None:
    url = bytes(range(256)) * 2 + b"x" * 88  # 600 bytes: 255 + 255 + 90
    encoded = with_url(url).encode()
    assert encoded[98:] == (
        bytes([2, 255]) + url[:255] + bytes([2, 255]) + url[255:510] + bytes([2, 90]) + url[510:]
    )
    assert parse_request(encoded) == with_url(url)
    assert with_url(b"").encode() == announce_packet(options=bytes([2, 0]))
    assert with_url(None).encode() == announce_packet()


def test_scrape_request_golden() -> None:
    a, b = b"a" * 20, b"b" * 20
    packet = u64(CID) + u32(2) + u32(TID) + a + b
    assert parse_request(packet) == ScrapeRequest(CID, TID, (a, b))
    assert ScrapeRequest(CID, TID, (a, b)).encode() == packet


def test_scrape_request_limit() -> None:
    hashes = tuple(i.to_bytes(20, "big") for i in range(MAX_SCRAPE_HASHES))
    packet = u64(CID) + u32(2) + u32(TID) + b"".join(hashes)
    assert parse_request(packet) == ScrapeRequest(CID, TID, hashes)


def test_peek_transaction_id() -> None:
    assert peek_transaction_id(u64(5) + u32(99) + u32(TID)) == TID
    assert peek_transaction_id(u64(5) + u32(99) + u32(TID)[:3]) is None


REQUEST_ERRORS: list[tuple[bytes, str]] = [
    (b"", r"^request is 0 bytes, shorter than the 16-byte header$"),
    (bytes(15), r"^request is 15 bytes, shorter than the 16-byte header$"),
    (
        u64(PROTOCOL_ID + 1) + u32(0) + u32(TID),
        r"^connect request protocol_id must be 0x41727101980, got 0x41727101981$",
    ),
    (u64(CID) + u32(0) + u32(TID), r"^connect request protocol_id must be 0x41727101980"),
    (u64(CID) + u32(3) + u32(TID), r"^unknown request action 3$"),
    (u64(CID) + u32(0xFFFFFFFF) + u32(TID), r"^unknown request action 4294967295$"),
    (announce_packet()[:97], r"^announce request is 97 bytes, shorter than 98$"),
    (announce_packet()[:16], r"^announce request is 16 bytes, shorter than 98$"),
    (announce_packet(event=4), r"^event must be in 0..3, got 4$"),
    (announce_packet(left=b"\xff" * 8), rf"^left must be in 0..{MAX_COUNTER}, got -1$"),
    (announce_packet(port=0), r"^port must be in 1..65535, got 0$"),
    (u64(CID) + u32(2) + u32(TID), r"^scrape request has no info_hash$"),
    (
        u64(CID) + u32(2) + u32(TID) + b"x" * 39,
        r"^scrape request info_hash data is 39 bytes, not a multiple of 20$",
    ),
    (
        u64(CID) + u32(2) + u32(TID) + b"x" * 20 * 75,
        r"^scrape request has 75 info_hashes, at most 74$",
    ),
]


@pytest.mark.parametrize(("packet", "message"), REQUEST_ERRORS)
def test_parse_request_rejects(packet: bytes, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        parse_request(packet)


def test_request_value_checks() -> None:
    with pytest.raises(TrackerError, match=r"^transaction_id must be in 0..4294967295, got -1$"):
        ConnectRequest(-1)
    with pytest.raises(TrackerError, match=r"^number of info_hashes must be in 1..74, got 0$"):
        ScrapeRequest(CID, TID, ())
    with pytest.raises(TrackerError, match=r"^info_hash must be 20 bytes, got 3$"):
        ScrapeRequest(CID, TID, (b"abc",))
    with pytest.raises(TrackerError, match=r"^connection_id must be in 0..\d+, got 18446744073709"):
        ScrapeRequest(2**64, TID, (INFO_HASH,))
    with pytest.raises(TrackerError, match=r"^peer_id must be 20 bytes, got 19$"):
        AnnounceRequest(CID, TID, INFO_HASH, PEER_ID[:19], 0, 0, 0, 1)
    with pytest.raises(TrackerError, match=r"^num_want must be in -2147483648..2147483647, got"):
        AnnounceRequest(CID, TID, INFO_HASH, PEER_ID, 0, 0, 0, 1, num_want=2**31)
    with pytest.raises(TrackerError, match=r"^key must be in 0..4294967295, got -1$"):
        AnnounceRequest(CID, TID, INFO_HASH, PEER_ID, 0, 0, 0, 1, key=-1)
    with pytest.raises(TrackerError, match=r"^ip must be in 0..4294967295, got 4294967296$"):
        AnnounceRequest(CID, TID, INFO_HASH, PEER_ID, 0, 0, 0, 1, ip=2**32)


# --------------------------------------------------------------------------- responses


def test_connect_response_golden() -> None:
    packet = u32(0) + u32(TID) + u64(CID)
    assert ConnectResponse(TID, CID).encode() == packet
    assert parse_response(packet, ipv6=False) == ConnectResponse(TID, CID)


def test_announce_response_ipv4_golden() -> None:
    response = AnnounceResponse(TID, 1800, 3, 4, (("10.0.0.1", 6881), ("::ffff:1.2.3.4", 1)))
    packet = (
        u32(1) + u32(TID) + u32(1800) + u32(3) + u32(4)
        + bytes([10, 0, 0, 1]) + u16(6881)
        + bytes([1, 2, 3, 4]) + u16(1)
    )  # fmt: skip
    assert response.encode(ipv6=False) == packet
    assert parse_response(packet, ipv6=False) == AnnounceResponse(
        TID, 1800, 3, 4, (("10.0.0.1", 6881), ("1.2.3.4", 1))
    )


def test_announce_response_ipv6_golden() -> None:
    response = AnnounceResponse(TID, 60, 0, 1, (("2001:db8::1", 443),))
    packet = (
        u32(1) + u32(TID) + u32(60) + u32(0) + u32(1)
        + bytes.fromhex("20010db8000000000000000000000001") + u16(443)
    )  # fmt: skip
    assert response.encode(ipv6=True) == packet
    assert parse_response(packet, ipv6=True) == response


def test_announce_response_peer_family_must_match() -> None:
    with pytest.raises(TrackerError, match=r"^peer 2001:db8::1 is not an IPv4 address, but"):
        AnnounceResponse(TID, 60, 0, 1, (("2001:db8::1", 443),)).encode(ipv6=False)
    with pytest.raises(TrackerError, match=r"^peer 1.2.3.4 is not an IPv6 address, but the resp"):
        AnnounceResponse(TID, 60, 0, 1, (("1.2.3.4", 443),)).encode(ipv6=True)
    # Without peers the family does not matter.
    assert AnnounceResponse(TID, 60, 0, 0).encode(ipv6=True) == AnnounceResponse(
        TID, 60, 0, 0
    ).encode(ipv6=False)


def test_scrape_response_golden() -> None:
    response = ScrapeResponse(TID, (ScrapeEntry(5, 100, 7), ScrapeEntry(0, 1, 2)))
    # seeders, completed, leechers per entry
    packet = u32(2) + u32(TID) + u32(5) + u32(100) + u32(7) + u32(0) + u32(1) + u32(2)
    assert response.encode() == packet
    assert parse_response(packet, ipv6=False) == response


def test_error_response_golden() -> None:
    packet = u32(3) + u32(TID) + b"unknown connection id"
    assert ErrorResponse(TID, "unknown connection id").encode() == packet
    assert parse_response(packet, ipv6=True) == ErrorResponse(TID, "unknown connection id")
    assert parse_response(u32(3) + u32(TID) + b"bad \xff", ipv6=False) == ErrorResponse(
        TID, "bad \ufffd"
    )


RESPONSE_ERRORS: list[tuple[bytes, bool, str]] = [
    (bytes(7), False, r"^response is 7 bytes, shorter than the 8-byte header$"),
    (u32(4) + u32(TID), False, r"^unknown response action 4$"),
    (u32(0) + u32(TID) + bytes(7), False, r"^connect response is 15 bytes, shorter than 16$"),
    (u32(1) + u32(TID) + bytes(11), False, r"^announce response is 19 bytes, shorter than 20$"),
    (u32(1) + u32(TID) + bytes(12 + 7), False, r"^compact IPv4 peer list is 7 bytes, not a mult"),
    (u32(1) + u32(TID) + bytes(12 + 6), True, r"^compact IPv6 peer list is 6 bytes, not a multi"),
    (u32(2) + u32(TID) + bytes(13), False, r"^scrape response body is 13 bytes, not a multiple"),
]


@pytest.mark.parametrize(("packet", "ipv6", "message"), RESPONSE_ERRORS)
def test_parse_response_rejects(packet: bytes, ipv6: bool, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        parse_response(packet, ipv6=ipv6)


def test_response_value_checks() -> None:
    with pytest.raises(TrackerError, match=r"^interval must be in 0..4294967295, got 4294967296$"):
        AnnounceResponse(TID, 2**32, 0, 0)
    with pytest.raises(TrackerError, match=r"^seeders must be in 0..4294967295, got 4294967296$"):
        ScrapeResponse(TID, (ScrapeEntry(2**32, 0, 0),))
    with pytest.raises(TrackerError, match=r"^connection_id must be in 0..\d+, got -1$"):
        ConnectResponse(TID, -1)
    with pytest.raises(TrackerError, match=r"^error message is not valid Unicode"):
        ErrorResponse(TID, "\ud800").encode()
    with pytest.raises(TrackerError, match=r"^peer ip must be an IP address, got 'x'$"):
        AnnounceResponse(TID, 60, 0, 0, (("x", 1),)).encode(ipv6=False)


# --------------------------------------------------------------------------- properties

u32s = st.integers(0, 2**32 - 1)
u64s = st.integers(0, 2**64 - 1)
counters = st.integers(0, MAX_COUNTER)
hashes = st.binary(min_size=20, max_size=20)

requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(ConnectRequest, u32s),
    st.builds(
        AnnounceRequest,
        connection_id=u64s,
        transaction_id=u32s,
        info_hash=hashes,
        peer_id=hashes,
        downloaded=counters,
        left=counters,
        uploaded=counters,
        port=st.integers(1, 0xFFFF),
        event=st.sampled_from(Event),
        ip=u32s,
        key=u32s,
        num_want=st.integers(-(2**31), 2**31 - 1),
        url_data=st.none() | st.binary(max_size=700),
    ),
    st.builds(
        ScrapeRequest,
        u64s,
        u32s,
        st.lists(hashes, min_size=1, max_size=MAX_SCRAPE_HASHES).map(tuple),
    ),
)


@given(requests)
def test_request_round_trip(request: Request) -> None:
    assert parse_request(request.encode()) == request


def _ips(version: Literal[4, 6]) -> st.SearchStrategy[str]:
    return (
        st.ip_addresses(v=version)
        .filter(lambda ip: not (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped))
        .map(str)
    )


def _responses(version: Literal[4, 6]) -> st.SearchStrategy[Response]:
    entries = st.builds(ScrapeEntry, u32s, u32s, u32s)
    peers = st.lists(st.tuples(_ips(version), st.integers(0, 0xFFFF)), max_size=20).map(tuple)
    return st.one_of(
        st.builds(ConnectResponse, u32s, u64s),
        st.builds(AnnounceResponse, u32s, u32s, u32s, u32s, peers),
        st.builds(ScrapeResponse, u32s, st.lists(entries, max_size=74).map(tuple)),
        st.builds(ErrorResponse, u32s, st.text(max_size=100)),
    )


def _encode(response: Response, ipv6: bool) -> bytes:
    if isinstance(response, AnnounceResponse):
        return response.encode(ipv6=ipv6)
    return response.encode()


@given(_responses(4))
def test_ipv4_response_round_trip(response: Response) -> None:
    assert parse_response(_encode(response, False), ipv6=False) == response


@given(_responses(6))
def test_ipv6_response_round_trip(response: Response) -> None:
    assert parse_response(_encode(response, True), ipv6=True) == response


@given(st.binary(max_size=200), st.booleans())
def test_parsers_on_arbitrary_bytes_raise_only_tracker_error(data: bytes, ipv6: bool) -> None:
    with contextlib.suppress(TrackerError):
        parse_request(data)
    with contextlib.suppress(TrackerError):
        parse_response(data, ipv6=ipv6)


@given(
    st.sampled_from([PROTOCOL_ID, CID, 0]),
    st.integers(0, 5),
    u32s,
    st.binary(max_size=200),
)
def test_structured_requests_raise_only_tracker_error(
    connection_id: int, action: int, transaction_id: int, body: bytes
) -> None:
    packet = u64(connection_id) + u32(action) + u32(transaction_id) + body
    try:
        request = parse_request(packet)
    except TrackerError:
        return
    assert request.transaction_id == transaction_id
    if not isinstance(request, ConnectRequest):
        assert request.connection_id == connection_id


@given(st.integers(0, 5), u32s, st.binary(max_size=200), st.booleans())
def test_structured_responses_raise_only_tracker_error(
    action: int, transaction_id: int, body: bytes, ipv6: bool
) -> None:
    try:
        response = parse_response(u32(action) + u32(transaction_id) + body, ipv6=ipv6)
    except TrackerError:
        return
    assert response.transaction_id == transaction_id


@given(st.binary(max_size=300))
def test_arbitrary_options_never_invalidate_an_announce(options: bytes) -> None:
    request = parse_request(announce_packet(options=options))
    assert isinstance(request, AnnounceRequest)
    assert request.url_data is None or len(request.url_data) <= len(options)


# ---- the quick announce reader, held to parse_request

_FIELDS = st.tuples(
    st.integers(0, 2**64 - 1),  # connection id
    st.sampled_from([0, 1, 1, 1, 2, 3]),  # action: mostly announce
    st.integers(0, 2**32 - 1),
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
    *(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 10) for _ in range(3)),
    st.integers(0, 5),  # event: 0-3 valid
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 0xFFFF) | st.just(0),
)


@given(_FIELDS.map(lambda f: struct.pack("!QII20s20sqqqIIIiH", *f)) | st.binary(max_size=120))
def test_quick_announce_reads_what_parse_request_reads_alike(data: bytes) -> None:
    quick = quick_announce(data)
    if quick is None:
        return
    full = parse_request(data)
    assert isinstance(full, AnnounceRequest)
    assert UdpAnnounce.of(full) == quick


_PLAIN = st.tuples(
    st.integers(0, 2**64 - 1),
    st.just(1),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
    *(st.integers(0, 2**63 - 1) for _ in range(3)),
    st.integers(0, 3),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(1, 0xFFFF),
)


@given(_PLAIN)
def test_quick_announce_takes_every_plain_announce(fields: tuple[int | bytes, ...]) -> None:
    data = struct.pack("!QII20s20sqqqIIIiH", *fields)
    full = parse_request(data)
    assert isinstance(full, AnnounceRequest)
    assert quick_announce(data) == UdpAnnounce.of(full)
    assert quick_announce(data + b"\x02\x00") is None  # with options: the full reader's
