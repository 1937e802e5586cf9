"""HTTP tracker protocol: announce (BEP 3), compact peers (BEP 23), IPv6 peers (BEP 7),
scrape (BEP 48).

Both directions are provided, sans-IO:

* tracker side: :func:`parse_announce` / :func:`parse_scrape` read the raw URL query
  string; :meth:`AnnounceResponse.encode`, :func:`encode_scrape` and :func:`failure`
  produce the bencoded response bodies;
* client side (and tests): :meth:`AnnounceRequest.encode`, :func:`encode_scrape_request`,
  :func:`parse_announce_response` and :func:`parse_scrape_response`.

Query strings are split on ``&`` and the first ``=``, and each name and value is
percent-decoded to *bytes* (``info_hash`` and ``peer_id`` are raw 20-byte strings, so
they are never decoded as UTF-8). ``+`` is kept literally: BitTorrent clients
percent-escape every byte outside the unreserved set, and RFC 3986 gives ``+`` no
special meaning in a query. Unknown parameters (``supportcrypto``, BEP 7's ``ipv4`` /
``ipv6``, ...) are ignored; a known one given twice is an error.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal, NamedTuple
from urllib.parse import quote_from_bytes

from . import bencode
from .bencode import Bencodable, Decoded
from .errors import TrackerError

__all__ = [
    "MAX_COUNTER",
    "MAX_KEY_LENGTH",
    "MAX_QUERY_LENGTH",
    "MAX_SCRAPE_HASHES",
    "AnnounceParams",
    "AnnounceRequest",
    "AnnounceResponse",
    "Event",
    "ScrapeEntry",
    "TrackerPeer",
    "compact_peer",
    "encode_compact_response",
    "encode_scrape",
    "encode_scrape_request",
    "failure",
    "parse_announce",
    "parse_announce_response",
    "parse_compact_peers",
    "parse_scrape",
    "parse_scrape_response",
    "percent_decode",
    "quick_announce",
]

MAX_QUERY_LENGTH: Final = 4096
"""Longest query string accepted, in bytes (a real announce is a few hundred)."""

MAX_SCRAPE_HASHES: Final = 74
"""Most ``info_hash`` values in one scrape: BEP 15's UDP limit, also opentracker's."""

MAX_KEY_LENGTH: Final = 64
"""Longest ``key`` accepted, in bytes (clients send 8 to 32 characters)."""

MAX_COUNTER: Final = 2**63 - 1
"""Largest ``uploaded``/``downloaded``/``left``/``numwant``: a signed 64-bit integer, as
in the UDP protocol (BEP 15), so both transports feed the same store."""

_HASH_LENGTH: Final = 20


class Event(IntEnum):
    """Announce event. The values are BEP 15's, so the HTTP and UDP codecs share them."""

    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3


_EVENTS: Final[dict[bytes, Event]] = {
    # BEP 3: "started, completed, or stopped (or empty, which is the same as not being
    # present)". Some clients send the word "empty" literally.
    b"": Event.NONE,
    b"empty": Event.NONE,
    b"paused": Event.NONE,  # BEP 21 partial seeds: a regular announce for the tracker
    b"started": Event.STARTED,
    b"completed": Event.COMPLETED,
    b"stopped": Event.STOPPED,
}
_FLAGS: Final[dict[bytes, bool]] = {b"0": False, b"1": True}


# --------------------------------------------------------------------------- validation


def _show(raw: bytes) -> str:
    """A bounded representation of untrusted bytes for error messages."""
    return repr(raw[:40]) + ("..." if len(raw) > 40 else "")


def _check_length(name: str, value: bytes, length: int) -> None:
    if len(value) != length:
        raise TrackerError(f"{name} must be {length} bytes, got {len(value)}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise TrackerError(f"{name} must be in {low}..{high}, got {value}")


def _ip(name: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise TrackerError(f"{name} must be an IP address, got {text[:64]!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise TrackerError(f"{name} must not have a scope id, got {text[:64]!r}")
    return address


def _peer_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; such a peer is an IPv4
    # peer (BEP 23 "peers"), not an IPv6 one (BEP 7 "peers6").
    address = _ip("peer ip", ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --------------------------------------------------------------------------- query strings


def _components(query: bytes | str) -> list[tuple[bytes, bytes, bytes]]:
    """A raw query string split into (name, "=", value) parts, not yet percent-decoded."""
    if isinstance(query, str):
        try:
            # surrogateescape: a str made from raw bytes with surrogateescape maps back
            raw = query.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise TrackerError("query string is not valid Unicode") from None
    else:
        raw = query
    if len(raw) > MAX_QUERY_LENGTH:
        raise TrackerError(
            f"query string is {len(raw)} bytes, longer than the {MAX_QUERY_LENGTH}-byte limit"
        )
    # Empty components are tolerated ("a=1&&b=2", a trailing "&").
    return [c.partition(b"=") for c in raw.split(b"&") if c]


def _query_pairs(query: bytes | str) -> list[tuple[bytes, bytes]]:
    """Split a raw query string into percent-decoded (name, value) byte pairs."""
    return [
        (
            percent_decode(name) if b"%" in name else name,
            percent_decode(value) if b"%" in value else value,
        )
        for name, _, value in _components(query)
    ]


_ESCAPES: Final = re.compile(rb"(?:%[0-9A-Fa-f]{2})+")
# What quoted-printable decoding copies as it is (no "=", no whitespace), and "%".
_PLAIN: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~!$'()*+,;:@/?-%"


def _decode_run(match: re.Match[bytes]) -> bytes:
    return bytes.fromhex(match.group().replace(b"%", b"").decode("ascii"))


def percent_decode(raw: bytes) -> bytes:
    """``raw`` with its ``%XX`` escapes decoded (RFC 3986 §2.1); a ``%`` not followed by
    two hex digits stays as it is, as ``urllib.parse.unquote_to_bytes`` leaves it.

    A few C calls, not a Python step per escape: a BitTorrent client escapes most of the
    40 bytes of ``info_hash`` and ``peer_id`` in every announce.
    """
    if b"%" not in raw:
        return raw
    if not raw.translate(None, _PLAIN):
        # Only escapes and characters quoted-printable decoding copies: "%XX" -> "=XX"
        # is then one C call. Each valid escape shortens the text by exactly 2, anything
        # else by less, so the length tells whether every escape was valid.
        decoded = binascii.a2b_qp(raw.replace(b"%", b"="))
        if len(decoded) == len(raw) - 2 * raw.count(b"%"):
            return decoded
    return _ESCAPES.sub(_decode_run, raw)


def _uint(name: str, raw: bytes) -> int:
    # Plain ASCII digits only: int() would also accept "+1", " 1", "1_0" and non-ASCII
    # digits. 20 digits already exceed MAX_COUNTER; the range is checked by the dataclass.
    if not raw.isdigit():
        raise TrackerError(f"{name} must be a non-negative decimal integer, got {_show(raw)}")
    if len(raw) > 20:
        raise TrackerError(f"{name} must be in 0..{MAX_COUNTER}, got a {len(raw)}-digit number")
    return int(raw)


def _flag(name: str, raw: bytes) -> bool:
    try:
        return _FLAGS[raw]
    except KeyError:
        raise TrackerError(f"{name} must be 0 or 1, got {_show(raw)}") from None


def _event(raw: bytes) -> Event:
    try:
        return _EVENTS[raw]
    except KeyError:
        raise TrackerError(
            f"event must be one of started, completed, stopped, paused or empty, got {_show(raw)}"
        ) from None


def _ascii(name: str, raw: bytes) -> str:
    if not raw.isascii():
        raise TrackerError(f"{name} must be ASCII, got {_show(raw)}")
    return raw.decode("ascii")


def _client_ip(raw: bytes) -> str | None:
    if not raw:
        return None  # "ip=" is sent by some clients: same as absent
    return str(_ip("ip", _ascii("ip", raw)))


# --------------------------------------------------------------------------- announce


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """An HTTP announce (BEP 3). Constructing one validates every field.

    ``ip`` is the address the client claims (canonical text form); it is only
    reported, the tracker decides whether to trust it. ``numwant`` None means the client
    did not say; clamping it is the tracker's business.
    """

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: Event = Event.NONE
    compact: bool = True  # BEP 23: trackers SHOULD default to compact
    no_peer_id: bool = False
    numwant: int | None = None
    key: str | None = None
    ip: str | None = None
    trackerid: bytes | None = None

    def __post_init__(self) -> None:
        if (  # the common case in one test; below, the field that is wrong
            len(self.info_hash) == _HASH_LENGTH
            and len(self.peer_id) == _HASH_LENGTH
            and 1 <= self.port <= 0xFFFF
            and 0 <= self.uploaded <= MAX_COUNTER
            and 0 <= self.downloaded <= MAX_COUNTER
            and 0 <= self.left <= MAX_COUNTER
            and (self.numwant is None or 0 <= self.numwant <= MAX_COUNTER)
            and self.key is None
            and self.ip is None
        ):
            return
        _check_length("info_hash", self.info_hash, _HASH_LENGTH)
        _check_length("peer_id", self.peer_id, _HASH_LENGTH)
        _check_range("port", self.port, 1, 0xFFFF)
        for name in ("uploaded", "downloaded", "left"):
            _check_range(name, getattr(self, name), 0, MAX_COUNTER)
        if self.numwant is not None:
            _check_range("numwant", self.numwant, 0, MAX_COUNTER)
        if self.key is not None:
            if not self.key.isascii():
                raise TrackerError(f"key must be ASCII, got {self.key[:64]!r}")
            if len(self.key) > MAX_KEY_LENGTH:
                raise TrackerError(
                    f"key must be at most {MAX_KEY_LENGTH} bytes, got {len(self.key)}"
                )
        if self.ip is not None:
            _ip("ip", self.ip)

    def encode(self) -> str:
        """The query string (without ``?``) a client sends for this announce."""
        pairs: list[tuple[str, bytes]] = [
            ("info_hash", self.info_hash),
            ("peer_id", self.peer_id),
            ("port", b"%d" % self.port),
            ("uploaded", b"%d" % self.uploaded),
            ("downloaded", b"%d" % self.downloaded),
            ("left", b"%d" % self.left),
        ]
        if self.event != Event.NONE:
            pairs.append(("event", Event(self.event).name.lower().encode("ascii")))
        pairs.append(("compact", b"1" if self.compact else b"0"))
        if self.no_peer_id:
            pairs.append(("no_peer_id", b"1"))
        if self.numwant is not None:
            pairs.append(("numwant", b"%d" % self.numwant))
        if self.key is not None:
            pairs.append(("key", self.key.encode("ascii")))
        if self.ip is not None:
            pairs.append(("ip", self.ip.encode("ascii")))
        if self.trackerid is not None:
            pairs.append(("trackerid", self.trackerid))
        return "&".join(f"{name}={quote_from_bytes(value, safe='')}" for name, value in pairs)


_ANNOUNCE_FIELDS: Final = frozenset(
    {
        b"info_hash",
        b"peer_id",
        b"port",
        b"uploaded",
        b"downloaded",
        b"left",
        b"event",
        b"compact",
        b"no_peer_id",
        b"numwant",
        b"key",
        b"ip",
        b"trackerid",
    }
)
_REQUIRED_FIELDS: Final = (b"info_hash", b"peer_id", b"port", b"uploaded", b"downloaded", b"left")


def parse_announce(query: bytes | str) -> AnnounceRequest:
    """Parse the raw query string (without ``?``) of an announce request."""
    fields: dict[bytes, bytes] = {}
    for name, _, value in _components(query):
        if b"%" in name:
            name = percent_decode(name)
        if name in _ANNOUNCE_FIELDS:  # only the values used are decoded
            if name in fields:
                raise TrackerError(f"duplicate field: {name.decode('ascii')}")
            fields[name] = percent_decode(value) if b"%" in value else value
    for key in _REQUIRED_FIELDS:
        if key not in fields:
            raise TrackerError(f"missing required field: {key.decode('ascii')}")
    get = fields.get
    numwant, key_value, ip = get(b"numwant"), get(b"key"), get(b"ip")
    return AnnounceRequest(  # positional: the order of the fields
        fields[b"info_hash"],
        fields[b"peer_id"],
        _uint("port", fields[b"port"]),
        _uint("uploaded", fields[b"uploaded"]),
        _uint("downloaded", fields[b"downloaded"]),
        _uint("left", fields[b"left"]),
        _event(get(b"event", b"")),
        _flag("compact", get(b"compact", b"1")),
        _flag("no_peer_id", get(b"no_peer_id", b"0")),
        None if numwant is None else _uint("numwant", numwant),
        None if key_value is None else _ascii("key", key_value),
        None if ip is None else _client_ip(ip),
        get(b"trackerid"),
    )


class AnnounceParams(NamedTuple):
    """What a tracker acts on in an announce: the fields of ``AnnounceRequest`` it uses."""

    info_hash: bytes
    peer_id: bytes
    port: int
    left: int
    event: Event
    numwant: int | None
    compact: bool
    no_peer_id: bool

    @classmethod
    def of(cls, request: AnnounceRequest) -> AnnounceParams:
        return cls(
            request.info_hash,
            request.peer_id,
            request.port,
            request.left,
            request.event,
            request.numwant,
            request.compact,
            request.no_peer_id,
        )


def quick_announce(query: bytes) -> AnnounceParams | None:
    """``parse_announce`` for the announce every client sends -- each component
    ``name=value`` with a plain name said once, no ``ip`` -- in a few C calls, or ``None``
    for anything else (``parse_announce`` then answers it, and names any problem). What
    it accepts, ``parse_announce`` accepts with the same fields (a property test)."""
    if len(query) > MAX_QUERY_LENGTH:
        return None
    parts = query.split(b"&")
    try:
        fields = dict(part.split(b"=", 1) for part in parts)
    except ValueError:  # a part without "="
        return None
    if len(fields) != len(parts) or b"ip" in fields or b"%" in b"".join(fields):
        return None  # a name said twice, an escaped name, a claimed address
    get = fields.get
    info_hash, peer_id = get(b"info_hash"), get(b"peer_id")
    port, uploaded, downloaded, left = (
        get(b"port"),
        get(b"uploaded"),
        get(b"downloaded"),
        get(b"left"),
    )
    if (
        info_hash is None
        or peer_id is None
        or port is None
        or uploaded is None
        or downloaded is None
        or left is None
        or not (port.isdigit() and uploaded.isdigit() and downloaded.isdigit())
        or not left.isdigit()
        or len(uploaded) > 19  # 19 digits may still fit MAX_COUNTER; 20 may not
        or len(downloaded) > 19
        or len(left) > 19
        or (len(uploaded) == 19 and int(uploaded) > MAX_COUNTER)
        or (len(downloaded) == 19 and int(downloaded) > MAX_COUNTER)
    ):
        return None
    left_count = int(left)
    if b"%" in info_hash:
        info_hash = percent_decode(info_hash)
    if b"%" in peer_id:
        peer_id = percent_decode(peer_id)
    port_number = int(port) if len(port) <= 5 else 0
    event = _EVENTS.get(get(b"event", b""))
    compact = _FLAGS.get(get(b"compact", b"1"))
    no_peer_id = _FLAGS.get(get(b"no_peer_id", b"0"))
    numwant_raw, key = get(b"numwant"), get(b"key")
    if (
        len(info_hash) != _HASH_LENGTH
        or len(peer_id) != _HASH_LENGTH
        or not 1 <= port_number <= 0xFFFF
        or event is None
        or compact is None
        or no_peer_id is None
        or left_count > MAX_COUNTER
        or (numwant_raw is not None and not (numwant_raw.isdigit() and len(numwant_raw) <= 19))
        or (key is not None and (b"%" in key or not key.isascii() or len(key) > MAX_KEY_LENGTH))
    ):
        return None
    numwant = None if numwant_raw is None else int(numwant_raw)
    if numwant is not None and numwant > MAX_COUNTER:
        return None
    return AnnounceParams(
        info_hash, peer_id, port_number, left_count, event, numwant, compact, no_peer_id
    )


@dataclass(frozen=True, slots=True)
class TrackerPeer:
    """One peer in an announce response. ``peer_id`` only appears in the non-compact form.

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, what a dual-stack socket reports
    for IPv4 clients) is sent as the IPv4 address it maps.
    """

    ip: str
    port: int
    peer_id: bytes | None = None

    def __post_init__(self) -> None:
        _ip("peer ip", self.ip)
        _check_range("peer port", self.port, 0, 0xFFFF)
        if self.peer_id is not None:
            _check_length("peer id", self.peer_id, _HASH_LENGTH)


def compact_peer(ip: str, port: int) -> bytes:
    """The compact form of one peer: 4-byte address + 2-byte port (BEP 23), or 16-byte
    address + 2-byte port (BEP 7), network byte order."""
    address = _peer_address(ip)
    _check_range("peer port", port, 0, 0xFFFF)
    return address.packed + port.to_bytes(2, "big")


_STRIDES: Final[dict[int, int]] = {4: 6, 6: 18}


def parse_compact_peers(data: bytes, family: Literal[4, 6]) -> list[tuple[str, int]]:
    """Split a compact ``peers`` (``family=4``) or ``peers6`` (``family=6``) string."""
    stride = _STRIDES.get(family)
    if stride is None:
        raise TrackerError(f"family must be 4 or 6, got {family!r}")
    if len(data) % stride:
        raise TrackerError(
            f"compact IPv{family} peer list is {len(data)} bytes, not a multiple of {stride}"
        )
    size = stride - 2
    return [
        (
            str(ipaddress.ip_address(data[offset : offset + size])),
            int.from_bytes(data[offset + size : offset + stride], "big"),
        )
        for offset in range(0, len(data), stride)
    ]


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """A successful announce response (BEP 3). ``None`` fields are left out."""

    interval: int
    min_interval: int | None = None
    complete: int | None = None
    incomplete: int | None = None
    peers: tuple[TrackerPeer, ...] = ()
    warning_message: str | None = None
    tracker_id: bytes | None = None
    # Peers already in compact form (6-byte IPv4, 18-byte IPv6 entries), as a tracker
    # stores them: appended as they are, no address parsed per peer (the hot path).
    compact4: bytes = b""
    compact6: bytes = b""

    def __post_init__(self) -> None:
        _check_range("interval", self.interval, 0, MAX_COUNTER)
        if len(self.compact4) % 6 or len(self.compact6) % 18:
            raise TrackerError("compact peers must be 6-byte (IPv4) or 18-byte (IPv6) entries")
        for name in ("min_interval", "complete", "incomplete"):
            value = getattr(self, name)
            if value is not None:
                _check_range(name, value, 0, MAX_COUNTER)

    def encode(self, compact: bool = True, no_peer_id: bool = False) -> bytes:
        """Bencode the response.

        Compact (BEP 23/7): IPv4 peers as 6-byte entries in ``peers`` (always present,
        possibly empty), IPv6 peers as 18-byte entries in ``peers6`` (only when there
        are any). Otherwise ``peers`` is a list of ``{ip, port[, peer id]}`` dicts; the
        peer id is left out when ``no_peer_id`` is set or the peer has none.
        """
        if compact and not self.peers and self.warning_message is None and self.tracker_id is None:
            return self._encode_compact()
        body: dict[str, Bencodable] = {"interval": self.interval}
        optional: dict[str, Bencodable | None] = {
            "min interval": self.min_interval,
            "complete": self.complete,
            "incomplete": self.incomplete,
            "warning message": self.warning_message,
            "tracker id": self.tracker_id,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if compact:
            ipv4: list[bytes] = []
            ipv6: list[bytes] = []
            for peer in self.peers:
                entry = compact_peer(peer.ip, peer.port)
                (ipv4 if len(entry) == 6 else ipv6).append(entry)
            body["peers"] = b"".join((*ipv4, self.compact4))
            if ipv6 or self.compact6:
                body["peers6"] = b"".join((*ipv6, self.compact6))
        else:
            peers: list[Bencodable] = []
            packed = parse_compact_peers(self.compact4, 4) + parse_compact_peers(self.compact6, 6)
            for peer in (*self.peers, *(TrackerPeer(ip, port) for ip, port in packed)):
                entry_dict: dict[str, Bencodable] = {
                    "ip": str(_peer_address(peer.ip)),
                    "port": peer.port,
                }
                if peer.peer_id is not None and not no_peer_id:
                    entry_dict["peer id"] = peer.peer_id
                peers.append(entry_dict)
            body["peers"] = peers
        return bencode.encode(body)

    def _encode_compact(self) -> bytes:
        return encode_compact_response(
            self.interval,
            self.min_interval,
            self.complete,
            self.incomplete,
            self.compact4,
            self.compact6,
        )


def encode_compact_response(
    interval: int,
    min_interval: int | None,
    complete: int | None,
    incomplete: int | None,
    compact4: bytes,
    compact6: bytes,
) -> bytes:
    """``AnnounceResponse(...).encode(compact=True)`` of a tracker's usual answer (stored
    compact peers, no message), written out -- the keys in their canonical (sorted)
    order, as ``bencode.encode`` would put them; a test holds the two to the same bytes --
    and without building the dataclass (the tracker's hot path). The counts and peers
    are the tracker's own, already valid."""
    parts = []
    if complete is not None:
        parts.append(b"8:completei%de" % complete)
    if incomplete is not None:
        parts.append(b"10:incompletei%de" % incomplete)
    parts.append(b"8:intervali%de" % interval)
    if min_interval is not None:
        parts.append(b"12:min intervali%de" % min_interval)
    parts.append(b"5:peers%d:" % len(compact4))
    parts.append(compact4)
    if compact6:
        parts.append(b"6:peers6%d:" % len(compact6))
        parts.append(compact6)
    return b"d%se" % b"".join(parts)


def failure(reason: str) -> bytes:
    """A failure response (BEP 3): ``{"failure reason": reason}``. BEP 48's text says
    ``failure_reason`` for scrape, but clients read BEP 3's key for both."""
    return bencode.encode({"failure reason": reason})


# --------------------------------------------------------------------------- response parsing


def _response_dict(data: bytes, what: str) -> dict[bytes, Decoded]:
    top = bencode.decode(data)
    if not isinstance(top, dict):
        raise TrackerError(f"{what} must be a bencoded dict, got {type(top).__name__}")
    reason = top.get(b"failure reason")
    if reason is not None:
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else repr(reason)
        raise TrackerError(f"tracker failure: {text}")
    return top


def _int_item(container: dict[bytes, Decoded], key: bytes, where: str) -> int | None:
    value = container.get(key)
    if value is not None and not isinstance(value, int):
        raise TrackerError(f"{where} {key.decode()!r} must be an integer")
    return value


def _bytes_item(container: dict[bytes, Decoded], key: bytes, where: str) -> bytes | None:
    value = container.get(key)
    if value is not None and not isinstance(value, bytes):
        raise TrackerError(f"{where} {key.decode()!r} must be a string")
    return value


def _peer_from_dict(item: Decoded, index: int) -> TrackerPeer:
    where = f"peer {index}"
    if not isinstance(item, dict):
        raise TrackerError(f"{where} must be a dict")
    ip = _bytes_item(item, b"ip", where)
    port = _int_item(item, b"port", where)
    if ip is None or port is None:
        raise TrackerError(f"{where} must have 'ip' and 'port'")
    text = str(_ip(f"{where} ip", _ascii(f"{where} ip", ip)))
    return TrackerPeer(text, port, _bytes_item(item, b"peer id", where))


def parse_announce_response(data: bytes) -> AnnounceResponse:
    """Parse an announce response, compact or not (client side; the inverse of
    :meth:`AnnounceResponse.encode`). A failure response raises :class:`TrackerError`
    with the tracker's reason."""
    top = _response_dict(data, "announce response")
    where = "announce response"
    interval = _int_item(top, b"interval", where)
    if interval is None:
        raise TrackerError("announce response has no 'interval'")
    raw_peers = top.get(b"peers")
    if isinstance(raw_peers, bytes):
        peers = [TrackerPeer(ip, port) for ip, port in parse_compact_peers(raw_peers, 4)]
    elif isinstance(raw_peers, list):
        peers = [_peer_from_dict(item, index) for index, item in enumerate(raw_peers)]
    else:
        raise TrackerError("announce response 'peers' must be a string or a list")
    raw_peers6 = _bytes_item(top, b"peers6", where)
    if raw_peers6 is not None:
        peers += [TrackerPeer(ip, port) for ip, port in parse_compact_peers(raw_peers6, 6)]
    warning = _bytes_item(top, b"warning message", where)
    return AnnounceResponse(
        interval=interval,
        min_interval=_int_item(top, b"min interval", where),
        complete=_int_item(top, b"complete", where),
        incomplete=_int_item(top, b"incomplete", where),
        peers=tuple(peers),
        warning_message=None if warning is None else warning.decode("utf-8", "replace"),
        tracker_id=_bytes_item(top, b"tracker id", where),
    )


# --------------------------------------------------------------------------- scrape


@dataclass(frozen=True, slots=True)
class ScrapeEntry:
    """Swarm counts for one torrent (BEP 48; BEP 15 seeders/completed/leechers)."""

    complete: int  # seeders now
    downloaded: int  # completed downloads ever
    incomplete: int  # leechers now

    def __post_init__(self) -> None:
        for name in ("complete", "downloaded", "incomplete"):
            _check_range(name, getattr(self, name), 0, MAX_COUNTER)


def parse_scrape(query: bytes | str) -> tuple[bytes, ...]:
    """The distinct ``info_hash`` values of a scrape query, in order of first appearance.

    An empty tuple means the client asked for a full scrape (no ``info_hash``): BEP 48
    does not define it, so serving or refusing it is the tracker's decision. More than
    :data:`MAX_SCRAPE_HASHES` values (duplicates included) are refused.
    """
    hashes: dict[bytes, None] = {}
    count = 0
    for name, value in _query_pairs(query):
        if name == b"info_hash":
            count += 1
            if count > MAX_SCRAPE_HASHES:
                raise TrackerError(f"too many info_hash values: more than {MAX_SCRAPE_HASHES}")
            _check_length("info_hash", value, _HASH_LENGTH)
            hashes[value] = None
    return tuple(hashes)


def encode_scrape_request(info_hashes: Iterable[bytes]) -> str:
    """The query string (without ``?``) of a scrape for ``info_hashes``."""
    parts = []
    for info_hash in info_hashes:
        _check_length("info_hash", info_hash, _HASH_LENGTH)
        parts.append(f"info_hash={quote_from_bytes(info_hash, safe='')}")
    if len(parts) > MAX_SCRAPE_HASHES:
        raise TrackerError(f"too many info_hash values: more than {MAX_SCRAPE_HASHES}")
    return "&".join(parts)


def encode_scrape(files: Mapping[bytes, ScrapeEntry]) -> bytes:
    """Bencode a scrape response: ``{"files": {info_hash: {complete, downloaded,
    incomplete}}}`` (BEP 48)."""
    body: dict[bytes, Bencodable] = {}
    for info_hash, entry in files.items():
        _check_length("info_hash", info_hash, _HASH_LENGTH)
        body[info_hash] = {
            "complete": entry.complete,
            "downloaded": entry.downloaded,
            "incomplete": entry.incomplete,
        }
    return bencode.encode({"files": body})


def parse_scrape_response(data: bytes) -> dict[bytes, ScrapeEntry]:
    """Parse a scrape response (client side; the inverse of :func:`encode_scrape`)."""
    top = _response_dict(data, "scrape response")
    files = top.get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("scrape response 'files' must be a dict")
    result: dict[bytes, ScrapeEntry] = {}
    for info_hash, stats in files.items():
        _check_length("info_hash", info_hash, _HASH_LENGTH)
        where = f"scrape entry {info_hash.hex()}"
        if not isinstance(stats, dict):
            raise TrackerError(f"{where} must be a dict")
        counts = [
            _int_item(stats, key, where) for key in (b"complete", b"downloaded", b"incomplete")
        ]
        complete, downloaded, incomplete = (0 if count is None else count for count in counts)
        result[info_hash] = ScrapeEntry(complete, downloaded, incomplete)
    return result
