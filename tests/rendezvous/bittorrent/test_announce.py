"""HTTP tracker codec: announce (BEP 3), compact peers (BEP 23), peers6 (BEP 7), scrape
(BEP 48)."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendezvous.bittorrent import Event, ScrapeEntry, TrackerError, TrackerPeer
from rendezvous.bittorrent.announce import (
    MAX_COUNTER,
    MAX_QUERY_LENGTH,
    MAX_SCRAPE_HASHES,
    AnnounceParams,
    AnnounceRequest,
    AnnounceResponse,
    compact_peer,
    encode_scrape,
    encode_scrape_request,
    failure,
    parse_announce,
    parse_announce_response,
    parse_compact_peers,
    parse_scrape,
    parse_scrape_response,
    percent_decode,
    quick_announce,
)
from rendezvous.bittorrent.bencode import encode

INFO_HASH = bytes(range(0xEC, 0x100))  # 20 bytes, none of them printable ASCII
PEER_ID = b"-NK0100-abcdefghijkl"
BASE: dict[str, str] = {
    "info_hash": quote_from_bytes(INFO_HASH),
    "peer_id": quote_from_bytes(PEER_ID),
    "port": "6881",
    "uploaded": "1",
    "downloaded": "2",
    "left": "3",
}


def query(**fields: str | None) -> str:
    """BASE with ``fields`` added or replaced; a None value removes the field."""
    merged: dict[str, str | None] = {**BASE, **fields}
    return "&".join(f"{name}={value}" for name, value in merged.items() if value is not None)


# --------------------------------------------------------------------------- parse_announce


def test_bep23_example() -> None:
    request = parse_announce(
        "peer_id=aaaaaaaaaaaaaaaaaaaa&info_hash=aaaaaaaaaaaaaaaaaaaa"
        "&port=6881&left=0&downloaded=100&uploaded=0&compact=1"
    )
    assert request == AnnounceRequest(
        info_hash=b"a" * 20,
        peer_id=b"a" * 20,
        port=6881,
        uploaded=0,
        downloaded=100,
        left=0,
        compact=True,
    )


def test_bep7_example_ipv6_parameter_is_ignored() -> None:
    request = parse_announce(
        "peer_id=aaaaaaaaaaaaaaaaaaaa&info_hash=aaaaaaaaaaaaaaaaaaaa"
        "&port=6881&left=0&downloaded=100&uploaded=0&compact=1"
        "&ipv6=2001%3A%3A53Aa%3A64c%3A0%3A7f83%3Abc43%3Adec9&ipv4=261.52.89.12"
    )
    assert request.port == 6881
    assert request.ip is None


def test_defaults() -> None:
    request = parse_announce(query())
    assert request == AnnounceRequest(INFO_HASH, PEER_ID, 6881, 1, 2, 3)
    assert request.event is Event.NONE
    assert request.compact is True  # BEP 23: compact by default
    assert request.no_peer_id is False
    assert (request.numwant, request.key, request.ip, request.trackerid) == (None,) * 4


def test_bytes_and_str_queries_are_the_same() -> None:
    assert parse_announce(query().encode()) == parse_announce(query())


@pytest.mark.parametrize("start", range(0, 256, 20))
def test_raw_binary_info_hash_is_not_utf8_decoded(start: int) -> None:
    raw = bytes((start + i) % 256 for i in range(20))
    assert parse_announce(query(info_hash=quote_from_bytes(raw))).info_hash == raw


def test_percent_escapes_are_case_insensitive_and_plus_is_literal() -> None:
    escaped = "".join(f"%{byte:02x}" for byte in INFO_HASH)  # lowercase hex
    assert parse_announce(query(info_hash=escaped)).info_hash == INFO_HASH
    assert parse_announce(query(peer_id="+" * 20)).peer_id == b"+" * 20


def test_unescaped_high_bytes_in_a_bytes_query() -> None:
    raw = bytes(range(0x80, 0x94))
    data = query(info_hash="X").encode().replace(b"info_hash=X", b"info_hash=" + raw)
    assert parse_announce(data).info_hash == raw


def test_surrogateescaped_str_maps_back_to_bytes() -> None:
    raw = bytes(range(0x80, 0x94))
    text = raw.decode("utf-8", "surrogateescape")
    assert parse_announce(query(info_hash=text)).info_hash == raw


def test_empty_components_and_unknown_fields_are_ignored() -> None:
    request = parse_announce("&&" + query(supportcrypto="1", corrupt="0") + "&supportcrypto=1&")
    assert request == parse_announce(query())


def test_percent_encoded_field_names() -> None:
    assert parse_announce(query().replace("info_hash", "info%5Fhash")).info_hash == INFO_HASH


@pytest.mark.parametrize(
    ("raw", "event"),
    [
        ("started", Event.STARTED),
        ("completed", Event.COMPLETED),
        ("stopped", Event.STOPPED),
        ("", Event.NONE),
        ("empty", Event.NONE),
        ("paused", Event.NONE),  # BEP 21
    ],
)
def test_events(raw: str, event: Event) -> None:
    assert parse_announce(query(event=raw)).event is event


def test_event_values_match_bep15() -> None:
    assert [int(e) for e in (Event.NONE, Event.COMPLETED, Event.STARTED, Event.STOPPED)] == [
        0,
        1,
        2,
        3,
    ]


@pytest.mark.parametrize(("raw", "expected"), [("0", False), ("1", True)])
def test_flags(raw: str, expected: bool) -> None:
    assert parse_announce(query(compact=raw)).compact is expected
    assert parse_announce(query(no_peer_id=raw)).no_peer_id is expected


def test_optional_fields() -> None:
    request = parse_announce(
        query(numwant="50", key="a1B2%2Fc3", ip="2001:DB8:0::1", trackerid="t%00%ff")
    )
    assert request.numwant == 50
    assert request.key == "a1B2/c3"
    assert request.ip == "2001:db8::1"  # canonical form
    assert request.trackerid == b"t\x00\xff"
    assert parse_announce(query(ip="10.0.0.1")).ip == "10.0.0.1"
    assert parse_announce(query(ip="")).ip is None  # "ip=" counts as absent
    assert parse_announce(query(key="k" * 64)).key == "k" * 64


def test_counters_at_their_limits() -> None:
    request = parse_announce(query(uploaded=str(MAX_COUNTER), left="0", port="65535"))
    assert (request.uploaded, request.left, request.port) == (MAX_COUNTER, 0, 65535)
    assert parse_announce(query(port="1", downloaded="007")).downloaded == 7


def test_query_length_limit() -> None:
    base = query() + "&pad="
    exact = base + "x" * (MAX_QUERY_LENGTH - len(base))
    assert len(exact) == MAX_QUERY_LENGTH
    parse_announce(exact)
    with pytest.raises(TrackerError, match=r"^query string is 4097 bytes, longer than the 4096"):
        parse_announce(exact + "x")


@pytest.mark.parametrize("name", ["info_hash", "peer_id", "port", "uploaded", "downloaded", "left"])
def test_missing_required_field(name: str) -> None:
    with pytest.raises(TrackerError, match=rf"^missing required field: {name}$"):
        parse_announce(query(**{name: None}))


@pytest.mark.parametrize("name", ["port", "info_hash", "event", "compact", "key", "trackerid"])
def test_duplicate_field(name: str) -> None:
    # The values are not parsed yet: duplication is detected first, even of "event=1".
    extra = f"&{name}={BASE[name]}" if name in BASE else f"&{name}=1&{name}=1"
    with pytest.raises(TrackerError, match=rf"^duplicate field: {name}$"):
        parse_announce(query() + extra)


ANNOUNCE_ERRORS: list[tuple[dict[str, str | None], str]] = [
    ({"info_hash": "a" * 19}, r"^info_hash must be 20 bytes, got 19$"),
    ({"info_hash": "a" * 21}, r"^info_hash must be 20 bytes, got 21$"),
    ({"info_hash": ""}, r"^info_hash must be 20 bytes, got 0$"),
    ({"peer_id": "%00" * 19}, r"^peer_id must be 20 bytes, got 19$"),
    ({"port": "0"}, r"^port must be in 1..65535, got 0$"),
    ({"port": "65536"}, r"^port must be in 1..65535, got 65536$"),
    ({"port": "abc"}, r"^port must be a non-negative decimal integer, got b'abc'$"),
    ({"port": "-1"}, r"^port must be a non-negative decimal integer, got b'-1'$"),
    ({"port": "%2B1"}, r"^port must be a non-negative decimal integer, got b'\+1'$"),
    ({"port": "%201"}, r"^port must be a non-negative decimal integer, got b' 1'$"),
    ({"port": "1_0"}, r"^port must be a non-negative decimal integer, got b'1_0'$"),
    ({"port": "%D9%A1"}, r"^port must be a non-negative decimal integer"),  # Arabic-Indic 1
    ({"port": ""}, r"^port must be a non-negative decimal integer, got b''$"),
    ({"uploaded": str(MAX_COUNTER + 1)}, rf"^uploaded must be in 0..{MAX_COUNTER}, got 9223"),
    ({"downloaded": "1" * 21}, rf"^downloaded must be in 0..{MAX_COUNTER}, got a 21-digit number$"),
    ({"left": "1.5"}, r"^left must be a non-negative decimal integer, got b'1.5'$"),
    ({"left": "x" * 100}, r"^left must be a non-negative decimal integer, got b'x{40}'\.\.\.$"),
    ({"numwant": "-1"}, r"^numwant must be a non-negative decimal integer, got b'-1'$"),
    ({"event": "start"}, r"^event must be one of started, completed, stopped, paused or empty"),
    ({"event": "STARTED"}, r"got b'STARTED'$"),
    ({"compact": "2"}, r"^compact must be 0 or 1, got b'2'$"),
    ({"compact": "true"}, r"^compact must be 0 or 1, got b'true'$"),
    ({"no_peer_id": "yes"}, r"^no_peer_id must be 0 or 1, got b'yes'$"),
    ({"key": "k" * 65}, r"^key must be at most 64 bytes, got 65$"),
    ({"key": "%FF"}, r"^key must be ASCII, got b'\\xff'$"),
    ({"ip": "example.com"}, r"^ip must be an IP address, got 'example.com'$"),
    ({"ip": "1.2.3.256"}, r"^ip must be an IP address, got '1.2.3.256'$"),
    ({"ip": "[::1]"}, r"^ip must be an IP address, got '\[::1\]'$"),
    ({"ip": "fe80::1%25eth0"}, r"^ip must not have a scope id, got 'fe80::1%eth0'$"),
    ({"ip": "%C3%A9"}, r"^ip must be ASCII, got b'\\xc3\\xa9'$"),
]


@pytest.mark.parametrize(("fields", "message"), ANNOUNCE_ERRORS)
def test_parse_announce_rejects(fields: dict[str, str | None], message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        parse_announce(query(**fields))


def test_field_without_equals_sign_has_an_empty_value() -> None:
    with pytest.raises(TrackerError, match=r"^compact must be 0 or 1, got b''$"):
        parse_announce(query() + "&compact")


def test_str_query_that_is_not_unicode() -> None:
    with pytest.raises(TrackerError, match=r"^query string is not valid Unicode$"):
        parse_announce(query() + "&x=\ud800")


def test_encode_request() -> None:
    request = AnnounceRequest(
        info_hash=b"\x00" * 19 + b"~",
        peer_id=b"A-z_0.9" + b" " * 13,
        port=6881,
        uploaded=1,
        downloaded=2,
        left=3,
        event=Event.STARTED,
        compact=False,
        no_peer_id=True,
        numwant=0,
        key="k&=",
        ip="::1",
        trackerid=b"",
    )
    assert request.encode() == (
        "info_hash=" + "%00" * 19 + "~&peer_id=A-z_0.9" + "%20" * 13 + "&port=6881"
        "&uploaded=1&downloaded=2&left=3&event=started&compact=0&no_peer_id=1&numwant=0"
        "&key=k%26%3D&ip=%3A%3A1&trackerid="
    )
    assert parse_announce(request.encode()) == request


def test_minimal_request_encoding_omits_defaults() -> None:
    request = AnnounceRequest(b"a" * 20, b"b" * 20, 1, 0, 0, 0)
    assert request.encode() == (
        f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&uploaded=0&downloaded=0&left=0&compact=1"
    )


# --------------------------------------------------------------------------- announce responses

IPV4_PEER = TrackerPeer("10.0.0.1", 6881, b"A" * 20)
IPV6_PEER = TrackerPeer("2001:db8::1", 51413)
IPV4_PEER_2 = TrackerPeer("192.168.1.2", 1)


def test_bep7_example_response() -> None:
    response = AnnounceResponse(
        interval=1800,
        peers=(
            TrackerPeer("105.105.105.105", 0x7070),  # b"iiiipp"
            TrackerPeer("6969:6969:6969:6969:6969:6969:6969:6969", 0x7070),
        ),
    )
    assert response.encode() == b"d8:intervali1800e5:peers6:iiiipp6:peers618:iiiiiiiiiiiiiiiippe"


def test_compact_response_byte_for_byte() -> None:
    response = AnnounceResponse(
        interval=1800,
        min_interval=900,
        complete=5,
        incomplete=7,
        peers=(IPV4_PEER, IPV6_PEER, IPV4_PEER_2),
    )
    assert response.encode(compact=True) == (
        b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali900e"
        b"5:peers12:\x0a\x00\x00\x01\x1a\xe1\xc0\xa8\x01\x02\x00\x01"
        b"6:peers618:\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\xc8\xd5"
        b"e"
    )


def test_compact_response_without_ipv6_peers_has_no_peers6() -> None:
    assert AnnounceResponse(60, peers=(IPV4_PEER,)).encode() == (
        b"d8:intervali60e5:peers6:\x0a\x00\x00\x01\x1a\xe1e"
    )
    assert AnnounceResponse(60).encode() == b"d8:intervali60e5:peers0:e"


def test_ipv4_mapped_peers_are_sent_as_ipv4() -> None:
    response = AnnounceResponse(60, peers=(TrackerPeer("::ffff:10.0.0.1", 6881),))
    assert response.encode() == b"d8:intervali60e5:peers6:\x0a\x00\x00\x01\x1a\xe1e"
    assert response.encode(compact=False) == (
        b"d8:intervali60e5:peersld2:ip8:10.0.0.14:porti6881eeee"
    )


def test_non_compact_response_byte_for_byte() -> None:
    response = AnnounceResponse(interval=60, peers=(IPV4_PEER, IPV6_PEER))
    assert response.encode(compact=False) == (
        b"d8:intervali60e5:peersl"
        b"d2:ip8:10.0.0.17:peer id20:" + b"A" * 20 + b"4:porti6881ee"
        b"d2:ip11:2001:db8::14:porti51413ee"
        b"ee"
    )
    assert response.encode(compact=False, no_peer_id=True) == (
        b"d8:intervali60e5:peersld2:ip8:10.0.0.14:porti6881eed2:ip11:2001:db8::14:porti51413eeee"
    )


def test_warning_message_and_tracker_id() -> None:
    response = AnnounceResponse(60, warning_message="slow down", tracker_id=b"T1")
    assert response.encode() == (
        b"d8:intervali60e5:peers0:10:tracker id2:T115:warning message9:slow downe"
    )
    assert parse_announce_response(response.encode()) == response


def test_failure() -> None:
    assert failure("bad info_hash") == b"d14:failure reason13:bad info_hashe"
    with pytest.raises(TrackerError, match=r"^tracker failure: bad info_hash$"):
        parse_announce_response(failure("bad info_hash"))


def test_parse_response_of_both_forms() -> None:
    response = AnnounceResponse(60, 1, 2, 3, peers=(IPV4_PEER, IPV6_PEER, IPV4_PEER_2))
    assert parse_announce_response(response.encode(compact=False)) == response
    compact = parse_announce_response(response.encode(compact=True))
    # compact: no peer ids, IPv4 ("peers") before IPv6 ("peers6")
    assert compact.peers == (
        TrackerPeer("10.0.0.1", 6881),
        TrackerPeer("192.168.1.2", 1),
        TrackerPeer("2001:db8::1", 51413),
    )


RESPONSE_ERRORS: list[tuple[Any, str]] = [
    ([], r"^announce response must be a bencoded dict, got list$"),
    ({"peers": b""}, r"^announce response has no 'interval'$"),
    ({"interval": b"60", "peers": b""}, r"^announce response 'interval' must be an integer$"),
    ({"interval": 60}, r"^announce response 'peers' must be a string or a list$"),
    ({"interval": 60, "peers": 5}, r"^announce response 'peers' must be a string or a list$"),
    ({"interval": -1, "peers": b""}, r"^interval must be in 0..\d+, got -1$"),
    ({"interval": 60, "peers": b"1234567"}, r"^compact IPv4 peer list is 7 bytes, not a mult"),
    ({"interval": 60, "peers": b"", "peers6": b"x" * 17}, r"^compact IPv6 peer list is 17 bytes"),
    ({"interval": 60, "peers": b"", "peers6": []}, r"^announce response 'peers6' must be a str"),
    ({"interval": 60, "peers": [1]}, r"^peer 0 must be a dict$"),
    ({"interval": 60, "peers": [{"ip": b"1.2.3.4"}]}, r"^peer 0 must have 'ip' and 'port'$"),
    ({"interval": 60, "peers": [{"ip": b"x", "port": 1}]}, r"^peer 0 ip must be an IP address"),
    ({"interval": 60, "peers": [{"ip": b"\xff", "port": 1}]}, r"^peer 0 ip must be ASCII"),
    ({"interval": 60, "peers": [{"ip": b"::1", "port": 70000}]}, r"^peer port must be in 0"),
    (
        {"interval": 60, "peers": [{"ip": b"::1", "port": 1, "peer id": b"short"}]},
        r"^peer id must be 20 bytes, got 5$",
    ),
    ({"failure reason": 5}, r"^tracker failure: 5$"),
]


@pytest.mark.parametrize(("body", "message"), RESPONSE_ERRORS)
def test_parse_announce_response_rejects(body: Any, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        parse_announce_response(encode(body))


def test_response_value_checks() -> None:
    with pytest.raises(TrackerError, match=r"^complete must be in 0..\d+, got -1$"):
        AnnounceResponse(60, complete=-1)
    with pytest.raises(TrackerError, match=r"^peer ip must be an IP address, got 'host'$"):
        TrackerPeer("host", 1)
    with pytest.raises(TrackerError, match=r"^peer port must be in 0..65535, got -1$"):
        TrackerPeer("::1", -1)


# --------------------------------------------------------------------------- compact peers


def test_compact_peer_byte_for_byte() -> None:
    assert compact_peer("1.2.3.4", 6881) == b"\x01\x02\x03\x04\x1a\xe1"
    assert compact_peer("2001:db8::1", 443) == bytes.fromhex("20010db8" + "00" * 11 + "01") + (
        b"\x01\xbb"
    )
    assert compact_peer("::ffff:1.2.3.4", 1) == b"\x01\x02\x03\x04\x00\x01"
    assert parse_compact_peers(b"\x01\x02\x03\x04\x1a\xe1\xff\xff\xff\xff\xff\xff", 4) == [
        ("1.2.3.4", 6881),
        ("255.255.255.255", 65535),
    ]
    assert parse_compact_peers(b"\x00" * 15 + b"\x01\x00\x50", 6) == [("::1", 80)]
    assert parse_compact_peers(b"", 6) == []


def test_compact_peer_errors() -> None:
    with pytest.raises(TrackerError, match=r"^peer ip must be an IP address, got 'nope'$"):
        compact_peer("nope", 1)
    with pytest.raises(TrackerError, match=r"^peer port must be in 0..65535, got 65536$"):
        compact_peer("1.2.3.4", 65536)
    with pytest.raises(TrackerError, match=r"^compact IPv4 peer list is 7 bytes, not a multi"):
        parse_compact_peers(b"\x00" * 7, 4)
    with pytest.raises(TrackerError, match=r"^compact IPv6 peer list is 6 bytes, not a multi"):
        parse_compact_peers(b"\x00" * 6, 6)
    family: Any = 5
    with pytest.raises(TrackerError, match=r"^family must be 4 or 6, got 5$"):
        parse_compact_peers(b"", family)


# --------------------------------------------------------------------------- scrape

X, Y, Z = b"x" * 20, b"y" * 20, b"z" * 20


def test_bep48_example() -> None:
    assert parse_scrape(f"info_hash={'x' * 20}&info_hash={'y' * 20}&info_hash={'z' * 20}") == (
        X,
        Y,
        Z,
    )
    files = {
        X: ScrapeEntry(complete=11, downloaded=13772, incomplete=19),
        Y: ScrapeEntry(complete=21, downloaded=206, incomplete=20),
        Z: ScrapeEntry(complete=14, downloaded=12191, incomplete=9),
    }
    expected = (
        b"d5:filesd"
        b"20:xxxxxxxxxxxxxxxxxxxxd8:completei11e10:downloadedi13772e10:incompletei19ee"
        b"20:yyyyyyyyyyyyyyyyyyyyd8:completei21e10:downloadedi206e10:incompletei20ee"
        b"20:zzzzzzzzzzzzzzzzzzzzd8:completei14e10:downloadedi12191e10:incompletei9ee"
        b"ee"
    )
    assert encode_scrape(files) == expected
    assert parse_scrape_response(expected) == files


def test_scrape_query_details() -> None:
    assert parse_scrape("") == ()  # full scrape: the tracker decides
    assert parse_scrape(b"info_hash=" + quote_from_bytes(INFO_HASH).encode()) == (INFO_HASH,)
    repeated = f"info_hash={'y' * 20}&foo=bar&info_hash={'x' * 20}&info_hash={'y' * 20}"
    assert parse_scrape(repeated) == (Y, X)  # duplicates collapse, first appearance order
    many = "&".join(f"info_hash={i:020d}" for i in range(MAX_SCRAPE_HASHES))
    assert len(parse_scrape(many)) == MAX_SCRAPE_HASHES


def test_scrape_errors() -> None:
    with pytest.raises(TrackerError, match=r"^info_hash must be 20 bytes, got 3$"):
        parse_scrape("info_hash=abc")
    too_many = "&".join(["info_hash=" + "x" * 20] * (MAX_SCRAPE_HASHES + 1))
    with pytest.raises(TrackerError, match=r"^too many info_hash values: more than 74$"):
        parse_scrape(too_many)
    with pytest.raises(TrackerError, match=r"^query string is 5000 bytes, longer than"):
        parse_scrape("a" * 5000)
    with pytest.raises(TrackerError, match=r"^info_hash must be 20 bytes, got 2$"):
        encode_scrape({b"xx": ScrapeEntry(0, 0, 0)})
    with pytest.raises(TrackerError, match=r"^info_hash must be 20 bytes, got 1$"):
        encode_scrape_request([b"x"])
    with pytest.raises(TrackerError, match=r"^too many info_hash values: more than 74$"):
        encode_scrape_request([X] * 75)
    with pytest.raises(TrackerError, match=r"^downloaded must be in 0..\d+, got -1$"):
        ScrapeEntry(0, -1, 0)


SCRAPE_RESPONSE_ERRORS: list[tuple[Any, str]] = [
    (b"files", r"^scrape response must be a bencoded dict, got bytes$"),
    ({}, r"^scrape response 'files' must be a dict$"),
    ({"files": []}, r"^scrape response 'files' must be a dict$"),
    ({"files": {b"x": {}}}, r"^info_hash must be 20 bytes, got 1$"),
    ({"files": {X: 1}}, r"^scrape entry (78){20} must be a dict$"),
    ({"files": {X: {"complete": b"1"}}}, r"^scrape entry (78){20} 'complete' must be an integer$"),
    ({"files": {X: {"incomplete": -2}}}, r"^incomplete must be in 0..\d+, got -2$"),
    ({"failure reason": "no"}, r"^tracker failure: no$"),
]


@pytest.mark.parametrize(("body", "message"), SCRAPE_RESPONSE_ERRORS)
def test_parse_scrape_response_rejects(body: Any, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        parse_scrape_response(encode(body))


def test_scrape_response_missing_counts_are_zero() -> None:
    assert parse_scrape_response(encode({"files": {X: {"complete": 4}}})) == {
        X: ScrapeEntry(4, 0, 0)
    }


# --------------------------------------------------------------------------- properties

hashes = st.binary(min_size=20, max_size=20)
counters = st.integers(0, MAX_COUNTER)
ips = (
    st.ip_addresses()
    .filter(lambda ip: not (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped))
    .map(str)
)
requests = st.builds(
    AnnounceRequest,
    info_hash=hashes,
    peer_id=hashes,
    port=st.integers(1, 0xFFFF),
    uploaded=counters,
    downloaded=counters,
    left=counters,
    event=st.sampled_from(Event),
    compact=st.booleans(),
    no_peer_id=st.booleans(),
    numwant=st.none() | counters,
    key=st.none() | st.text(st.characters(max_codepoint=127), max_size=64),
    ip=st.none() | ips,
    trackerid=st.none() | st.binary(max_size=64),
)
peers = st.builds(TrackerPeer, ip=ips, port=st.integers(0, 0xFFFF), peer_id=st.none() | hashes)
responses = st.builds(
    AnnounceResponse,
    interval=counters,
    min_interval=st.none() | counters,
    complete=st.none() | counters,
    incomplete=st.none() | counters,
    peers=st.lists(peers, max_size=8).map(tuple),
    warning_message=st.none() | st.text(max_size=20),
    tracker_id=st.none() | st.binary(max_size=20),
)
entries = st.builds(ScrapeEntry, counters, counters, counters)


@given(requests)
def test_request_round_trip(request: AnnounceRequest) -> None:
    assert parse_announce(request.encode()) == request
    assert parse_announce(request.encode().encode("ascii")) == request


@given(responses)
def test_non_compact_response_round_trip(response: AnnounceResponse) -> None:
    assert parse_announce_response(response.encode(compact=False)) == response
    without_ids = tuple(dataclasses.replace(peer, peer_id=None) for peer in response.peers)
    assert parse_announce_response(
        response.encode(compact=False, no_peer_id=True)
    ) == dataclasses.replace(response, peers=without_ids)


@given(responses)
def test_compact_response_round_trip(response: AnnounceResponse) -> None:
    def family(peer: TrackerPeer) -> int:
        return ipaddress.ip_address(peer.ip).version

    expected = tuple(
        TrackerPeer(peer.ip, peer.port)
        for version in (4, 6)
        for peer in response.peers
        if family(peer) == version
    )
    decoded = parse_announce_response(response.encode(compact=True))
    assert decoded == dataclasses.replace(response, peers=expected)


@given(st.lists(st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 0xFFFF))))
def test_compact_ipv4_round_trip(addresses: list[tuple[str, int]]) -> None:
    data = b"".join(compact_peer(ip, port) for ip, port in addresses)
    assert len(data) == 6 * len(addresses)
    assert parse_compact_peers(data, 4) == addresses


@given(st.lists(st.tuples(ips.filter(lambda ip: ":" in ip), st.integers(0, 0xFFFF))))
def test_compact_ipv6_round_trip(addresses: list[tuple[str, int]]) -> None:
    data = b"".join(compact_peer(ip, port) for ip, port in addresses)
    assert len(data) == 18 * len(addresses)
    assert parse_compact_peers(data, 6) == addresses


@given(st.lists(hashes, max_size=MAX_SCRAPE_HASHES, unique=True))
def test_scrape_request_round_trip(info_hashes: list[bytes]) -> None:
    assert parse_scrape(encode_scrape_request(info_hashes)) == tuple(info_hashes)


@given(st.dictionaries(hashes, entries, max_size=10))
def test_scrape_response_round_trip(files: dict[bytes, ScrapeEntry]) -> None:
    assert parse_scrape_response(encode_scrape(files)) == files


@given(st.binary(max_size=600))
def test_parsers_on_arbitrary_bytes_raise_only_tracker_error(data: bytes) -> None:
    for parse in (parse_announce, parse_scrape, parse_announce_response, parse_scrape_response):
        with contextlib.suppress(TrackerError):
            parse(data)


@given(st.text(max_size=600))
def test_parsers_on_arbitrary_text_raise_only_tracker_error(text: str) -> None:
    for parse in (parse_announce, parse_scrape):
        with contextlib.suppress(TrackerError):
            parse(text)


FIELD_NAMES = [*BASE, "event", "compact", "no_peer_id", "numwant", "key", "ip", "trackerid", "x"]
field_values = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([b"0", b"1", b"6881", b"started", b"::1", b"1.2.3.4", b"-1", b""]),
    st.just(INFO_HASH),
)


VALID_PAIRS: list[tuple[str, bytes]] = [
    ("info_hash", INFO_HASH),
    ("peer_id", PEER_ID),
    ("port", b"6881"),
    ("uploaded", b"1"),
    ("downloaded", b"2"),
    ("left", b"3"),
]
edits = st.lists(
    st.tuples(
        st.sampled_from(["replace", "drop", "add"]), st.sampled_from(FIELD_NAMES), field_values
    ),
    max_size=4,
)


def apply_edits(edit_list: list[tuple[str, str, bytes]]) -> list[tuple[str, bytes]]:
    pairs = list(VALID_PAIRS)
    for kind, name, value in edit_list:
        if kind == "drop":
            pairs = [pair for pair in pairs if pair[0] != name]
        elif kind == "replace" and any(pair[0] == name for pair in pairs):
            pairs = [(n, value if n == name else v) for n, v in pairs]
        else:
            pairs.append((name, value))
    return pairs


@given(edits)
def test_edited_queries_raise_only_tracker_error(edit_list: list[tuple[str, str, bytes]]) -> None:
    pairs = apply_edits(edit_list)
    text = "&".join(f"{name}={quote_from_bytes(value)}" for name, value in pairs)
    try:
        request = parse_announce(text)
    except TrackerError:
        return
    # Whatever is accepted is faithfully represented and re-encodes to the same request.
    given_fields = dict(pairs)
    assert request.info_hash == given_fields["info_hash"]
    assert request.peer_id == given_fields["peer_id"]
    assert request.port == int(given_fields["port"])
    assert request.trackerid == given_fields.get("trackerid")
    assert parse_announce(request.encode()) == request


response_values: st.SearchStrategy[Any] = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["ip", "port", "peer id", "complete", "downloaded", "incomplete"])
            | st.binary(min_size=20, max_size=20),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
RESPONSE_KEYS = [
    "interval",
    "min interval",
    "complete",
    "incomplete",
    "peers",
    "peers6",
    "warning message",
    "tracker id",
    "files",
    "failure reason",
]


@given(st.dictionaries(st.sampled_from(RESPONSE_KEYS), response_values, max_size=6))
def test_structured_responses_raise_only_tracker_error(body: dict[str, Any]) -> None:
    data = encode(body)
    for parse in (parse_announce_response, parse_scrape_response):
        with contextlib.suppress(TrackerError):
            parse(data)


@given(st.binary(max_size=64))
def test_percent_decode_is_unquote_to_bytes(raw: bytes) -> None:
    assert percent_decode(raw) == unquote_to_bytes(raw)


@given(st.lists(st.sampled_from([b"%", b"%4", b"%4a", b"%A0", b"=", b"a", b" ", b"\r\n", b"_"])))
def test_percent_decode_of_escape_soup_is_unquote_to_bytes(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    assert percent_decode(raw) == unquote_to_bytes(raw)


@given(
    st.integers(0, MAX_COUNTER),
    st.none() | st.integers(0, MAX_COUNTER),
    st.none() | st.integers(0, MAX_COUNTER),
    st.none() | st.integers(0, MAX_COUNTER),
    st.integers(0, 5).map(lambda n: bytes(6 * n)),
    st.integers(0, 3).map(lambda n: bytes(range(18)) * n),
)
def test_fast_compact_encoding_is_the_canonical_bencoding(
    interval: int,
    min_interval: int | None,
    complete: int | None,
    incomplete: int | None,
    compact4: bytes,
    compact6: bytes,
) -> None:
    response = AnnounceResponse(
        interval=interval,
        min_interval=min_interval,
        complete=complete,
        incomplete=incomplete,
        compact4=compact4,
        compact6=compact6,
    )
    body: dict[str, Any] = {"interval": interval, "peers": compact4}
    optional = {"min interval": min_interval, "complete": complete, "incomplete": incomplete}
    body.update({k: v for k, v in optional.items() if v is not None})
    if compact6:
        body["peers6"] = compact6
    assert response.encode(compact=True) == encode(body)


_PIECES = [
    b"%",
    b"%4",
    b"%41",
    b"%zz",
    b"%0a",
    b"%FF",
    b"%e9",
    b"=",
    b" ",
    b"\n",
    b"a",
    b"~",
    b"\xff",
]


@given(st.lists(st.sampled_from(_PIECES), max_size=24))
def test_percent_decode_is_unquote_to_bytes_on_escapes(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)  # valid, broken and trailing escapes among what QP treats apart
    assert percent_decode(raw) == unquote_to_bytes(raw)


# ---- the quick announce parser, held to parse_announce

_NAMES = [b"info_hash", b"peer_id", b"port", b"uploaded", b"downloaded", b"left", b"event"]
_NAMES += [b"compact", b"no_peer_id", b"numwant", b"key", b"ip", b"trackerid", b"corrupt"]
_NAMES += [b"port%3D", b"info%5Fhash", b""]
_VALUES = [b"", b"0", b"1", b"2", b"80", b"65535", b"65536", b"0080", b"9" * 18, b"9" * 19]
_VALUES += [b"1" * 21, b"-1", b"+1", b"started", b"st%61rted", b"stopped", b"%41" * 20]
_VALUES += [b"a" * 20, b"%ff" * 20, b"a" * 19 + b"%", b"\xe9", b"k%20y", b"127.0.0.1", b"1=2"]
components = st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)).map(b"=".join)
queries = st.lists(components | st.sampled_from([b"", b"noequals"]), max_size=16).map(b"&".join)


@given(queries | requests.map(lambda r: r.encode().encode("latin-1")))
def test_quick_announce_accepts_only_what_parse_announce_accepts_alike(query: bytes) -> None:
    quick = quick_announce(query)
    if quick is None:
        return
    assert AnnounceParams.of(parse_announce(query)) == quick


@given(requests.map(lambda r: dataclasses.replace(r, ip=None)))
def test_quick_announce_takes_every_plain_announce(request_: AnnounceRequest) -> None:
    """The common announce never falls back (what a client encodes, without ``ip``)."""
    query = request_.encode().encode("latin-1")
    quick = quick_announce(query)
    if request_.key is not None and ("%" in query.decode("latin-1").split("key=")[1]):
        return  # an escaped key: the full parser's
    assert quick == AnnounceParams.of(request_)
