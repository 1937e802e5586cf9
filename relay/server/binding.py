"""Sans-IO STUN Binding server: RFC 8489 Binding, RFC 5780 NAT behaviour discovery, and
optionally classic RFC 3489.

``BindingService.handle(data, addr, listener_index, now)`` takes one received datagram and
returns the one datagram to send back, as ``(payload, listener_index_to_send_from,
destination)``, or ``None``. It never raises on network input: anything it cannot answer
is counted in ``StunCounters.dropped`` by reason. Binding needs no timers.

The common request — a Binding request with nothing but FINGERPRINT, or with no attribute
at all (what ICE agents and most STUN clients send) — takes a fast path that checks the
header and the fingerprint and assembles the response from cached pieces; everything else
goes through the full codec.
"""

from __future__ import annotations

import logging
import struct
from binascii import crc32
from collections.abc import Sequence

from relay.server.counters import DropReason, StunCounters
from relay.server.listeners import Listener
from relay.server.types import Address, ListenerReply
from relay.stun import (
    MAGIC_COOKIE,
    AttributeType,
    ErrorCode,
    Message,
    MessageClass,
    Method,
    StunError,
    check_fingerprint,
    encode_address,
    encode_attribute,
    encode_xor_address,
    parse,
)

log = logging.getLogger(__name__)


_HEADER = struct.Struct("!HHI")
_U32 = struct.Struct("!I")
_FINGERPRINT_XOR = 0x5354554E
_FINGERPRINT_TLV = b"\x80\x28\x00\x04"  # FINGERPRINT type and length (RFC 8489 §14.7)
_BINDING_REQUEST = 0x0001
# Type Binding request, length 8 (FINGERPRINT alone), magic cookie.
_FAST_REQUEST_PREFIX = b"\x00\x01\x00\x08\x21\x12\xa4\x42"
_BINDING_SUCCESS = 0x0101
_CLASS_MASK = 0x0110  # the two class bits of the message type (RFC 8489 §5)
_ADDRESS_CACHE_LIMIT = 65536

# Attributes a Binding request may carry that the server understands (RFC 8489 §14,
# RFC 5780 §7); anything comprehension-required outside this set gets a 420.
_BINDING_KNOWN = frozenset(
    {
        AttributeType.CHANGE_REQUEST,
        AttributeType.RESPONSE_PORT,
        AttributeType.PADDING,
        AttributeType.USERNAME,
        AttributeType.MESSAGE_INTEGRITY,
        AttributeType.MESSAGE_INTEGRITY_SHA256,
        AttributeType.FINGERPRINT,
        AttributeType.PRIORITY,
        AttributeType.USE_CANDIDATE,
        AttributeType.ICE_CONTROLLED,
        AttributeType.ICE_CONTROLLING,
        AttributeType.SOFTWARE,
    }
)


class BindingService:
    """Answers STUN Binding requests arriving on ``listeners``."""

    def __init__(
        self,
        listeners: Sequence[Listener],
        *,
        software: str = "",
        rfc3489: bool = False,
        counters: StunCounters | None = None,
    ) -> None:
        self.listeners = tuple(listeners)
        self.software = software
        self.rfc3489 = rfc3489
        self.counters = counters if counters is not None else StunCounters()
        self._xor_v4: dict[Address, bytes] = {}
        # Per listener: the attributes every success response from it ends with
        # (RESPONSE-ORIGIN and OTHER-ADDRESS per RFC 5780 §6.1 when it has an
        # alternate, and SOFTWARE), and the four possible headers
        # [ipv6 * 2 + fingerprint] (the length depends on both).
        self._suffix: list[bytes] = []
        self._headers: list[tuple[bytes, bytes, bytes, bytes]] = []
        self._header_crc: list[int] = []  # CRC-32 of the IPv4 + FINGERPRINT header
        for listener in self.listeners:
            suffix = b"".join(self._suffix_attributes(listener))
            self._suffix.append(suffix)
            headers = []
            for v6 in (False, True):
                for fp in (False, True):
                    length = (24 if v6 else 12) + len(suffix) + (8 if fp else 0)
                    headers.append(_HEADER.pack(_BINDING_SUCCESS, length, MAGIC_COOKIE))
            self._headers.append((headers[0], headers[1], headers[2], headers[3]))
            self._header_crc.append(crc32(headers[1]))

    def _suffix_attributes(self, listener: Listener) -> list[bytes]:
        parts = []
        if listener.other is not None:
            # RFC 5780 §7.3 RESPONSE-ORIGIN and §7.4 OTHER-ADDRESS, plain (not XOR)
            # address encoding like MAPPED-ADDRESS.
            for attr_type, address in (
                (AttributeType.RESPONSE_ORIGIN, listener.address),
                (AttributeType.OTHER_ADDRESS, listener.other),
            ):
                parts.append(encode_attribute(attr_type, encode_address(*address)))
        if self.software:
            parts.append(encode_attribute(AttributeType.SOFTWARE, self.software.encode()))
        return parts

    # ---------------------------------------------------------------- entry point

    def handle(
        self, data: bytes, addr: Address, index: int, now: float = 0.0
    ) -> ListenerReply | None:
        """Answer one datagram received on listener ``index`` from ``addr``.

        ``now`` is unused (Binding keeps no state); it is there so that every core shares
        one signature."""
        # Fast path: a Binding request carrying only FINGERPRINT, from an IPv4 address
        # seen before -- what ICE agents and STUN clients send over and over. Every check
        # of the general path is here too: exact size, type, length, cookie, FINGERPRINT
        # TLV and its CRC (RFC 8489 §14.7); anything else falls through to it.
        if len(data) == 28 and data[:8] == _FAST_REQUEST_PREFIX and data[20:24] == _FINGERPRINT_TLV:
            xma = self._xor_v4.get(addr)
            if (
                xma is not None
                and crc32(data[:20]) ^ _FINGERPRINT_XOR == _U32.unpack_from(data, 24)[0]
            ):
                tid = data[8:20]
                suffix = self._suffix[index]
                self.counters.fast_bindings += 1
                crc = crc32(suffix, crc32(xma, crc32(tid, self._header_crc[index])))
                return (
                    b"".join(
                        (
                            self._headers[index][1],
                            tid,
                            xma,
                            suffix,
                            _FINGERPRINT_TLV,
                            _U32.pack(crc ^ _FINGERPRINT_XOR),
                        )
                    ),
                    index,
                    addr,
                )
        return self._general(data, addr, index)

    def _general(self, data: bytes, addr: Address, index: int) -> ListenerReply | None:
        counters = self.counters
        size = len(data)
        if size < 20 or data[0] & 0xC0:
            counters.dropped[DropReason.NOT_STUN] += 1
            return None
        msg_type, length, cookie = _HEADER.unpack_from(data)
        if length + 20 != size or length & 3:
            counters.dropped[DropReason.BAD_LENGTH] += 1
            return None
        if cookie != MAGIC_COOKIE:
            return self._classic(data, addr, index)
        if msg_type == _BINDING_REQUEST and (
            length == 0 or (length == 8 and data[20:24] == _FINGERPRINT_TLV)
        ):
            fp = length == 8
            if fp and not check_fingerprint(data, 20):
                counters.dropped[DropReason.BAD_FINGERPRINT] += 1
                return None
            counters.count_request(Method.BINDING)
            return self._simple_success(data[8:20], addr, index, fp)
        try:
            return self._full(data, addr, index, msg_type)
        except Exception:  # a bug must not take the worker down; count and carry on
            counters.dropped[DropReason.INTERNAL_ERROR] += 1
            log.exception("internal error handling a %d-byte datagram from %s", size, addr)
            return None

    def _simple_success(self, tid: bytes, addr: Address, index: int, fp: bool) -> ListenerReply:
        """Success for a Binding request with no attribute but FINGERPRINT."""
        xma = self._xor_mapped(addr, tid)
        v6 = len(addr) != 2
        if not v6:
            # The IPv4 XOR-MAPPED-ADDRESS depends only on the address (XOR with the
            # cookie); IPv6 also XORs with the transaction id (RFC 8489 §14.2).
            if len(self._xor_v4) >= _ADDRESS_CACHE_LIMIT:
                self._xor_v4.clear()
            self._xor_v4[addr] = xma
        body = b"".join((self._headers[index][2 * v6 + fp], tid, xma, self._suffix[index]))
        self.counters.success += 1
        if fp:
            body = b"".join((body, _FINGERPRINT_TLV, _U32.pack(crc32(body) ^ _FINGERPRINT_XOR)))
        return body, index, addr

    @staticmethod
    def _xor_mapped(addr: Address, tid: bytes) -> bytes:
        value = encode_xor_address(addr[0], addr[1], tid)
        return encode_attribute(AttributeType.XOR_MAPPED_ADDRESS, value)

    # ---------------------------------------------------------------- full path

    def _full(self, data: bytes, addr: Address, index: int, msg_type: int) -> ListenerReply | None:
        counters = self.counters
        if data[-8:-4] == _FINGERPRINT_TLV and not check_fingerprint(data, len(data) - 8):
            # RFC 8489 §7.3: a message whose FINGERPRINT fails is discarded, unanswered
            # (it may not even be STUN).
            counters.dropped[DropReason.BAD_FINGERPRINT] += 1
            return None
        try:
            request = parse(data)
        except StunError as exc:
            if msg_type & _CLASS_MASK:  # not a request: nothing to answer
                counters.dropped[DropReason.MALFORMED] += 1
                return None
            counters.count_request(msg_type & 0x3EEF)
            return self.bad_request(data, addr, index, str(exc))
        if request.message_class == MessageClass.INDICATION:
            counters.indications += 1  # RFC 8489 §6.3.2: no response to an indication
            return None
        if request.message_class != MessageClass.REQUEST:
            counters.dropped[DropReason.UNEXPECTED_CLASS] += 1
            return None
        counters.count_request(request.method)
        if request.method != Method.BINDING:
            return self._error(request, addr, index, 400, "Bad Request: unsupported method")
        unknown = list(request.unknown_required)
        unknown += [t for t, _ in request.attributes if t < 0x8000 and t not in _BINDING_KNOWN]
        if unknown:
            return self._error(request, addr, index, 420, "Unknown Attribute", unknown)
        return self._binding(request, addr, index)

    def _reply_socket(self, request: Message, index: int) -> int | None:
        """The listener a response to ``request`` leaves from, per its CHANGE-REQUEST;
        ``None`` when it asks for a change this listener has no alternate for."""
        change = request.get(AttributeType.CHANGE_REQUEST)
        if change is None or not (change.change_ip or change.change_port):
            return index
        table = self.listeners[index].change
        if table is None:
            return None
        return table[change.change_ip << 1 | change.change_port]

    def _no_alternate(self, request: Message, addr: Address, index: int) -> ListenerReply:
        # RFC 5780 §7.2: a server without an alternate address answers a CHANGE-REQUEST
        # with 420, listing CHANGE-REQUEST in UNKNOWN-ATTRIBUTES.
        return self._error(
            request,
            addr,
            index,
            420,
            "Unknown Attribute: no alternate address",
            [AttributeType.CHANGE_REQUEST],
        )

    def _binding(self, request: Message, addr: Address, index: int) -> ListenerReply | None:
        listener = self.listeners[index]
        destination = addr
        send_from = self._reply_socket(request, index)
        if send_from is None:
            return self._no_alternate(request, addr, index)
        response_port = request.get(AttributeType.RESPONSE_PORT)
        if isinstance(response_port, int):
            # RFC 5780 §7.5: send to the source IP of the request, at RESPONSE-PORT.
            destination = (addr[0], response_port, *addr[2:])
        attributes: list[tuple[int, object]] = [
            (AttributeType.XOR_MAPPED_ADDRESS, (addr[0], addr[1])),
        ]
        source = self.listeners[send_from]
        if listener.other is not None:
            attributes.append((AttributeType.RESPONSE_ORIGIN, tuple(source.address)))
            attributes.append((AttributeType.OTHER_ADDRESS, tuple(listener.other)))
        if self.software:
            attributes.append((AttributeType.SOFTWARE, self.software))
        padding = request.get(AttributeType.PADDING)
        if isinstance(padding, bytes) and padding:
            # RFC 5780 §7.6: pad the response like the request; never more than the
            # request carried, so this cannot amplify.
            attributes.append((AttributeType.PADDING, bytes(len(padding))))
        response = Message(
            Method.BINDING, MessageClass.SUCCESS, request.transaction_id, tuple(attributes)
        )
        self.counters.success += 1
        return response.encode(fingerprint=request.has_fingerprint), send_from, destination

    def _error(
        self,
        request: Message,
        addr: Address,
        index: int,
        code: int,
        reason: str,
        unknown: Sequence[int] = (),
    ) -> ListenerReply:
        attributes: list[tuple[int, object]] = [(AttributeType.ERROR_CODE, ErrorCode(code, reason))]
        if unknown:
            attributes.append((AttributeType.UNKNOWN_ATTRIBUTES, tuple(dict.fromkeys(unknown))))
        if self.software:
            attributes.append((AttributeType.SOFTWARE, self.software))
        response = Message(
            request.method, MessageClass.ERROR, request.transaction_id, tuple(attributes)
        )
        self.counters.count_error(code)
        return response.encode(fingerprint=request.has_fingerprint), index, addr

    def bad_request(self, data: bytes, addr: Address, index: int, problem: str) -> ListenerReply:
        """A 400 for a request whose body did not parse: only the header is trusted."""
        method = _HEADER.unpack_from(data)[0] & 0x3EEF
        code = 400
        reason = f"Bad Request: {problem}"[:127]  # RFC 8489 §14.8: under 128 characters
        response = Message(
            method,
            MessageClass.ERROR,
            data[8:20],
            ((AttributeType.ERROR_CODE, ErrorCode(code, reason)),),
        )
        self.counters.count_error(code)
        fingerprint = data[-8:-4] == _FINGERPRINT_TLV  # the request carried one (RFC 8489 §7.3)
        return response.encode(fingerprint=fingerprint), index, addr

    # ---------------------------------------------------------------- RFC 3489

    def _classic(self, data: bytes, addr: Address, index: int) -> ListenerReply | None:
        """Classic RFC 3489 Binding (no magic cookie), answered only with --rfc3489.

        Off by default: classic servers were abused for reflection. RESPONSE-ADDRESS
        (RFC 3489 §11.2.2) is never honoured, for the same reason.
        """
        counters = self.counters
        if not self.rfc3489:
            counters.dropped[DropReason.CLASSIC_DISABLED] += 1
            return None
        try:
            request = parse(data, allow_classic=True)
        except StunError:
            counters.dropped[DropReason.MALFORMED] += 1
            return None
        if request.message_class != MessageClass.REQUEST or request.method != Method.BINDING:
            counters.dropped[DropReason.UNEXPECTED_CLASS] += 1
            return None
        counters.count_request(Method.BINDING)
        listener = self.listeners[index]
        send_from = self._reply_socket(request, index)
        if send_from is None:
            return self._no_alternate(request, addr, index)
        # RFC 3489 §11.2: MAPPED-ADDRESS, SOURCE-ADDRESS (where the response leaves from)
        # and CHANGED-ADDRESS (the alternate; omitted when there is none).
        attributes: list[tuple[int, object]] = [
            (AttributeType.MAPPED_ADDRESS, (addr[0], addr[1])),
            (AttributeType.SOURCE_ADDRESS, tuple(self.listeners[send_from].address)),
        ]
        if listener.other is not None:
            attributes.append((AttributeType.CHANGED_ADDRESS, tuple(listener.other)))
        response = Message(
            Method.BINDING, MessageClass.SUCCESS, request.transaction_id, tuple(attributes)
        )
        counters.success += 1
        return response.encode(), send_from, addr
