"""UDP tracker protocol (BEP 15) with the announce extension options of BEP 41.

Every packet starts with a fixed header (all integers big-endian)::

    request:  connection_id u64 | action u32 | transaction_id u32 | body
    response: action u32 | transaction_id u32 | body

:func:`parse_request` (tracker side) and :func:`parse_response` (client side) dispatch
on the action through a table; every dataclass has ``encode()`` producing its datagram.
Checking an announce/scrape ``connection_id`` is not the codec's job (see
:mod:`rendezvous.bittorrent.connection_ids`).

BEP 15: "Clients and trackers should not assume packets to be of a certain size", so
bytes after a connect request, a connect response or (BEP 41 options aside) an announce
request's fixed part are ignored; scrape requests/responses and announce responses
have no room for that (their bodies are arrays).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from struct import Struct
from struct import error as struct_error
from typing import Final, NamedTuple, TypeAlias

from .announce import MAX_COUNTER, Event, ScrapeEntry, compact_peer, parse_compact_peers
from .errors import TrackerError

__all__ = [
    "ANNOUNCE_REQUEST_SIZE",
    "MAX_SCRAPE_HASHES",
    "PROTOCOL_ID",
    "Action",
    "AnnounceRequest",
    "AnnounceResponse",
    "ConnectRequest",
    "ConnectResponse",
    "ErrorResponse",
    "OptionType",
    "Request",
    "Response",
    "ScrapeRequest",
    "ScrapeResponse",
    "UdpAnnounce",
    "encode_announce_response",
    "parse_request",
    "parse_response",
    "peek_transaction_id",
    "quick_announce",
]

PROTOCOL_ID: Final = 0x41727101980
"""The magic ``protocol_id`` of a connect request (BEP 15)."""

MAX_SCRAPE_HASHES: Final = 74
"""BEP 15: "Up to about 74 torrents can be scraped at once" (16 + 74 * 20 bytes fits a
1500-byte MTU). More is refused."""

_U32: Final = 0xFFFFFFFF
_U64: Final = 2**64 - 1
_HASH_LENGTH: Final = 20
_MAX_EVENT: Final = max(Event)


class Action(IntEnum):
    CONNECT = 0
    ANNOUNCE = 1
    SCRAPE = 2
    ERROR = 3


class OptionType(IntEnum):
    """BEP 41 option types. Types >= 2 are always followed by a length byte."""

    END_OF_OPTIONS = 0
    NOP = 1
    URL_DATA = 2


_REQUEST_HEADER: Final = Struct("!QII")  # connection_id, action, transaction_id
_RESPONSE_HEADER: Final = Struct("!II")  # action, transaction_id
_CONNECT_RESPONSE: Final = Struct("!IIQ")  # action, transaction_id, connection_id
# connection_id, action, transaction_id, info_hash, peer_id, downloaded, left, uploaded,
# event, ip, key, num_want, port. The 64-bit counters are signed, as num_want is.
_ANNOUNCE_REQUEST: Final = Struct("!QII20s20sqqqIIIiH")
_ANNOUNCE_RESPONSE: Final = Struct("!IIIII")  # action, transaction_id, interval, leechers, seeders
_SCRAPE_ENTRY: Final = Struct("!III")  # seeders, completed, leechers
ANNOUNCE_REQUEST_SIZE: Final = _ANNOUNCE_REQUEST.size  # 98: BEP 41 options start here


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise TrackerError(f"{name} must be in {low}..{high}, got {value}")


def _check_u32(name: str, value: int) -> None:
    _check_range(name, value, 0, _U32)


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != _HASH_LENGTH:
        raise TrackerError(f"{name} must be {_HASH_LENGTH} bytes, got {len(value)}")


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    transaction_id: int

    def __post_init__(self) -> None:
        _check_u32("transaction_id", self.transaction_id)

    def encode(self) -> bytes:
        return _REQUEST_HEADER.pack(PROTOCOL_ID, Action.CONNECT, self.transaction_id)


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """A UDP announce. ``ip`` 0 means "use the sender's address" (BEP 15; meaningless
    over IPv6), ``num_want`` -1 (or any negative value) means "tracker default".

    ``url_data`` is the concatenation of the BEP 41 URLData options (the PATH and QUERY
    of the tracker URL), or ``None`` when the client sent none. An empty URLData option
    (``b""``) means "supported, but the URL has no path or query".
    """

    connection_id: int
    transaction_id: int
    info_hash: bytes
    peer_id: bytes
    downloaded: int
    left: int
    uploaded: int
    port: int
    event: Event = Event.NONE
    ip: int = 0
    key: int = 0
    num_want: int = -1
    url_data: bytes | None = None

    def __post_init__(self) -> None:
        # One chained test for the common, valid case (every tracker request is built
        # here); the checks below name the field when it fails.
        if (
            0 <= self.connection_id <= _U64
            and 0 <= self.transaction_id <= _U32
            and len(self.info_hash) == _HASH_LENGTH
            and len(self.peer_id) == _HASH_LENGTH
            and 0 <= self.downloaded <= MAX_COUNTER
            and 0 <= self.left <= MAX_COUNTER
            and 0 <= self.uploaded <= MAX_COUNTER
            and 1 <= self.port <= 0xFFFF
            and 0 <= self.event <= _MAX_EVENT
            and 0 <= self.ip <= _U32
            and 0 <= self.key <= _U32
            and -(2**31) <= self.num_want < 2**31
        ):
            return
        _check_range("connection_id", self.connection_id, 0, _U64)
        _check_u32("transaction_id", self.transaction_id)
        _check_hash("info_hash", self.info_hash)
        _check_hash("peer_id", self.peer_id)
        for name in ("downloaded", "left", "uploaded"):
            _check_range(name, getattr(self, name), 0, MAX_COUNTER)
        _check_range("port", self.port, 1, 0xFFFF)
        _check_range("event", self.event, 0, _MAX_EVENT)
        _check_u32("ip", self.ip)
        _check_u32("key", self.key)
        _check_range("num_want", self.num_want, -(2**31), 2**31 - 1)

    def encode(self) -> bytes:
        fixed = _ANNOUNCE_REQUEST.pack(
            self.connection_id,
            Action.ANNOUNCE,
            self.transaction_id,
            self.info_hash,
            self.peer_id,
            self.downloaded,
            self.left,
            self.uploaded,
            self.event,
            self.ip,
            self.key,
            self.num_want,
            self.port,
        )
        if self.url_data is None:
            return fixed
        parts = [fixed]
        # BEP 41: URLData payloads longer than 255 bytes are split over several options,
        # which the tracker concatenates; an empty payload is a single (2, 0) option.
        chunks = [self.url_data[i : i + 255] for i in range(0, len(self.url_data), 255)]
        for chunk in chunks or [b""]:
            parts.append(bytes((OptionType.URL_DATA, len(chunk))))
            parts.append(chunk)
        return b"".join(parts)


def _parse_options(data: bytes) -> bytes | None:
    """The concatenated URLData of the BEP 41 options in ``data``, or None if none.

    Parsing stops at EndOfOptions or the end of the packet (BEP 41). Unknown types >= 2
    are skipped using their length byte. An option whose length byte or data runs past
    the end of the packet is incomplete: it is ignored and parsing stops, but the
    announce stays valid and the options completed before it are kept (BEP 41 defines
    no error for this, and a client can always send the shorter option list itself).
    """
    chunks: list[bytes] | None = None
    pos = 0
    while pos < len(data):
        option = data[pos]
        if option == OptionType.END_OF_OPTIONS:
            break
        if option == OptionType.NOP:
            pos += 1
            continue
        if pos + 2 > len(data):
            break  # no length byte
        end = pos + 2 + data[pos + 1]
        if end > len(data):
            break  # data truncated
        if option == OptionType.URL_DATA:
            chunks = [] if chunks is None else chunks
            chunks.append(data[pos + 2 : end])
        pos = end
    return None if chunks is None else b"".join(chunks)


@dataclass(frozen=True, slots=True)
class ScrapeRequest:
    connection_id: int
    transaction_id: int
    info_hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_range("connection_id", self.connection_id, 0, _U64)
        _check_u32("transaction_id", self.transaction_id)
        _check_range("number of info_hashes", len(self.info_hashes), 1, MAX_SCRAPE_HASHES)
        for info_hash in self.info_hashes:
            _check_hash("info_hash", info_hash)

    def encode(self) -> bytes:
        header = _REQUEST_HEADER.pack(self.connection_id, Action.SCRAPE, self.transaction_id)
        return b"".join((header, *self.info_hashes))


Request: TypeAlias = ConnectRequest | AnnounceRequest | ScrapeRequest


def _parse_connect_request(data: bytes, connection_id: int, transaction_id: int) -> Request:
    if connection_id != PROTOCOL_ID:
        raise TrackerError(
            f"connect request protocol_id must be {PROTOCOL_ID:#x}, got {connection_id:#x}"
        )
    return ConnectRequest(transaction_id)


def _parse_announce_request(data: bytes, connection_id: int, transaction_id: int) -> Request:
    if len(data) < ANNOUNCE_REQUEST_SIZE:
        raise TrackerError(
            f"announce request is {len(data)} bytes, shorter than {ANNOUNCE_REQUEST_SIZE}"
        )
    fields = _ANNOUNCE_REQUEST.unpack_from(data)
    (info_hash, peer_id, downloaded, left, uploaded, event, ip, key, num_want, port) = fields[3:]
    if event not in _EVENTS:
        raise TrackerError(f"event must be in 0..{max(Event)}, got {event}")
    options = data[ANNOUNCE_REQUEST_SIZE:] if len(data) > ANNOUNCE_REQUEST_SIZE else b""
    return AnnounceRequest(  # positional: the order of the fields
        connection_id,
        transaction_id,
        info_hash,
        peer_id,
        downloaded,
        left,
        uploaded,
        port,
        _EVENTS[event],
        ip,
        key,
        num_want,
        _parse_options(options) if options else None,
    )


def _parse_scrape_request(data: bytes, connection_id: int, transaction_id: int) -> Request:
    body = data[_REQUEST_HEADER.size :]
    if not body:
        raise TrackerError("scrape request has no info_hash")
    if len(body) % _HASH_LENGTH:
        raise TrackerError(
            f"scrape request info_hash data is {len(body)} bytes, not a multiple of {_HASH_LENGTH}"
        )
    count = len(body) // _HASH_LENGTH
    if count > MAX_SCRAPE_HASHES:
        raise TrackerError(f"scrape request has {count} info_hashes, at most {MAX_SCRAPE_HASHES}")
    hashes = tuple(body[i : i + _HASH_LENGTH] for i in range(0, len(body), _HASH_LENGTH))
    return ScrapeRequest(connection_id, transaction_id, hashes)


_EVENTS: Final[dict[int, Event]] = {event.value: event for event in Event}
_REQUEST_PARSERS: Final[dict[int, Callable[[bytes, int, int], Request]]] = {
    Action.CONNECT: _parse_connect_request,
    Action.ANNOUNCE: _parse_announce_request,
    Action.SCRAPE: _parse_scrape_request,
}


class UdpAnnounce(NamedTuple):
    """What a tracker acts on in a UDP announce: the fields of ``AnnounceRequest`` it
    uses (the answer goes to the datagram's source, so ``ip`` and ``key`` are not)."""

    connection_id: int
    transaction_id: int
    info_hash: bytes
    peer_id: bytes
    left: int
    port: int
    event: Event
    num_want: int

    @classmethod
    def of(cls, request: AnnounceRequest) -> UdpAnnounce:
        return cls(
            request.connection_id,
            request.transaction_id,
            request.info_hash,
            request.peer_id,
            request.left,
            request.port,
            request.event,
            request.num_want,
        )


def quick_announce(data: bytes) -> UdpAnnounce | None:
    """``parse_request`` for the announce nearly every client sends -- 98 bytes, no BEP 41
    options -- in one ``unpack``, or ``None`` for anything else (``parse_request`` then
    reads it, and names any problem). What it accepts, ``parse_request`` reads as the same
    announce (a property test)."""
    if len(data) != ANNOUNCE_REQUEST_SIZE:
        return None
    (connection_id, action, transaction_id, info_hash, peer_id, downloaded, left, uploaded,
     event, _ip, _key, num_want, port) = _ANNOUNCE_REQUEST.unpack(data)  # fmt: skip
    # The signed 64-bit counters are valid when not negative (then <= MAX_COUNTER).
    if action != Action.ANNOUNCE or downloaded < 0 or left < 0 or uploaded < 0 or not port:
        return None
    kind = _EVENTS.get(event)
    if kind is None:
        return None
    return UdpAnnounce(
        connection_id, transaction_id, info_hash, peer_id, left, port, kind, num_want
    )


def parse_request(data: bytes) -> Request:
    """Parse a datagram received by the tracker."""
    if len(data) < _REQUEST_HEADER.size:
        raise TrackerError(
            f"request is {len(data)} bytes, shorter than the {_REQUEST_HEADER.size}-byte header"
        )
    connection_id, action, transaction_id = _REQUEST_HEADER.unpack_from(data)
    parser = _REQUEST_PARSERS.get(action)
    if parser is None:
        raise TrackerError(f"unknown request action {action}")
    return parser(data, connection_id, transaction_id)


def peek_transaction_id(data: bytes) -> int | None:
    """The transaction id of a request datagram, even a malformed one (to address an
    :class:`ErrorResponse`), or None if the datagram is too short to hold one."""
    if len(data) < _REQUEST_HEADER.size:
        return None
    transaction_id: int = _REQUEST_HEADER.unpack_from(data)[2]
    return transaction_id


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    transaction_id: int
    connection_id: int

    def __post_init__(self) -> None:
        _check_u32("transaction_id", self.transaction_id)
        _check_range("connection_id", self.connection_id, 0, _U64)

    def encode(self) -> bytes:
        return _CONNECT_RESPONSE.pack(Action.CONNECT, self.transaction_id, self.connection_id)


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """``peers`` must all be of the family of the socket the request came in on."""

    transaction_id: int
    interval: int
    leechers: int
    seeders: int
    peers: tuple[tuple[str, int], ...] = ()
    compact: bytes = b""  # peers already packed (6- or 18-byte entries), appended as is

    def __post_init__(self) -> None:
        if (
            0 <= self.transaction_id <= _U32
            and 0 <= self.interval <= _U32
            and 0 <= self.leechers <= _U32
            and 0 <= self.seeders <= _U32
        ):
            return  # the common case in one test; below, the field that is wrong
        for name in ("transaction_id", "interval", "leechers", "seeders"):
            _check_u32(name, getattr(self, name))

    def encode(self, *, ipv6: bool) -> bytes:
        """BEP 15: peers are 6-byte (IPv4) or 18-byte (IPv6) entries, chosen by the
        address family of the request's packet; ``ipv6`` says which. A peer of the other
        family raises :class:`TrackerError` (filter peers by family before encoding)."""
        size = 18 if ipv6 else 6
        if not self.peers and not len(self.compact) % size:  # a tracker's answer
            return encode_announce_response(
                self.transaction_id, self.interval, self.leechers, self.seeders, self.compact
            )
        header = _ANNOUNCE_RESPONSE.pack(
            Action.ANNOUNCE, self.transaction_id, self.interval, self.leechers, self.seeders
        )
        parts = [header]
        for ip, port in self.peers:
            entry = compact_peer(ip, port)
            if len(entry) != size:
                raise TrackerError(
                    f"peer {ip} is not an IPv{6 if ipv6 else 4} address, "
                    f"but the response is for an IPv{6 if ipv6 else 4} request"
                )
            parts.append(entry)
        if len(self.compact) % size:
            raise TrackerError(f"compact peers must be {size}-byte entries for this request")
        parts.append(self.compact)
        return b"".join(parts)


def encode_announce_response(
    transaction_id: int, interval: int, leechers: int, seeders: int, compact: bytes
) -> bytes:
    """``AnnounceResponse(...).encode()`` of peers already packed for the request's family
    (a tracker's hot path: no dataclass built per answer)."""
    try:
        header = _ANNOUNCE_RESPONSE.pack(
            Action.ANNOUNCE, transaction_id, interval, leechers, seeders
        )
    except struct_error:
        AnnounceResponse(transaction_id, interval, leechers, seeders)  # names the field
        raise
    return header + compact


@dataclass(frozen=True, slots=True)
class ScrapeResponse:
    """One entry per requested info_hash, in request order (BEP 15). On the wire an
    entry is seeders (``complete``), completed (``downloaded``), leechers
    (``incomplete``), each 32 bits."""

    transaction_id: int
    entries: tuple[ScrapeEntry, ...]

    def __post_init__(self) -> None:
        _check_u32("transaction_id", self.transaction_id)
        for entry in self.entries:
            _check_u32("seeders", entry.complete)
            _check_u32("completed", entry.downloaded)
            _check_u32("leechers", entry.incomplete)

    def encode(self) -> bytes:
        header = _RESPONSE_HEADER.pack(Action.SCRAPE, self.transaction_id)
        entries = (_SCRAPE_ENTRY.pack(e.complete, e.downloaded, e.incomplete) for e in self.entries)
        return b"".join((header, *entries))


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error packet; the message is UTF-8 text filling the rest of the datagram."""

    transaction_id: int
    message: str

    def __post_init__(self) -> None:
        _check_u32("transaction_id", self.transaction_id)

    def encode(self) -> bytes:
        try:
            text = self.message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TrackerError(f"error message is not valid Unicode: {exc.reason}") from None
        return _RESPONSE_HEADER.pack(Action.ERROR, self.transaction_id) + text


Response: TypeAlias = ConnectResponse | AnnounceResponse | ScrapeResponse | ErrorResponse


def _parse_connect_response(data: bytes, transaction_id: int, ipv6: bool) -> Response:
    if len(data) < _CONNECT_RESPONSE.size:
        raise TrackerError(
            f"connect response is {len(data)} bytes, shorter than {_CONNECT_RESPONSE.size}"
        )
    return ConnectResponse(transaction_id, _CONNECT_RESPONSE.unpack_from(data)[2])


def _parse_announce_response(data: bytes, transaction_id: int, ipv6: bool) -> Response:
    if len(data) < _ANNOUNCE_RESPONSE.size:
        raise TrackerError(
            f"announce response is {len(data)} bytes, shorter than {_ANNOUNCE_RESPONSE.size}"
        )
    _, _, interval, leechers, seeders = _ANNOUNCE_RESPONSE.unpack_from(data)
    peers = parse_compact_peers(data[_ANNOUNCE_RESPONSE.size :], 6 if ipv6 else 4)
    return AnnounceResponse(transaction_id, interval, leechers, seeders, tuple(peers))


def _parse_scrape_response(data: bytes, transaction_id: int, ipv6: bool) -> Response:
    body = data[_RESPONSE_HEADER.size :]
    if len(body) % _SCRAPE_ENTRY.size:
        raise TrackerError(
            f"scrape response body is {len(body)} bytes, not a multiple of {_SCRAPE_ENTRY.size}"
        )
    entries = (ScrapeEntry(*fields) for fields in _SCRAPE_ENTRY.iter_unpack(body))
    return ScrapeResponse(transaction_id, tuple(entries))


def _parse_error_response(data: bytes, transaction_id: int, ipv6: bool) -> Response:
    message = data[_RESPONSE_HEADER.size :].decode("utf-8", "replace")
    return ErrorResponse(transaction_id, message)


_RESPONSE_PARSERS: Final[dict[int, Callable[[bytes, int, bool], Response]]] = {
    Action.CONNECT: _parse_connect_response,
    Action.ANNOUNCE: _parse_announce_response,
    Action.SCRAPE: _parse_scrape_response,
    Action.ERROR: _parse_error_response,
}


def parse_response(data: bytes, *, ipv6: bool) -> Response:
    """Parse a datagram received from a tracker; ``ipv6`` is the family of the socket
    (it sets the size of announce peers, BEP 15)."""
    if len(data) < _RESPONSE_HEADER.size:
        raise TrackerError(
            f"response is {len(data)} bytes, shorter than the {_RESPONSE_HEADER.size}-byte header"
        )
    action, transaction_id = _RESPONSE_HEADER.unpack_from(data)
    parser = _RESPONSE_PARSERS.get(action)
    if parser is None:
        raise TrackerError(f"unknown response action {action}")
    return parser(data, transaction_id, ipv6)
