"""Sans-IO TURN server (RFC 8656 over UDP client transports; relaying to peers over UDP).

``TurnServer.handle_client(data, addr, transport, now)`` takes one datagram (or stream frame)
from a client and ``TurnServer.handle_peer(relay, data, addr, now)`` one from a peer at a
relayed socket; each returns at most one ``Reply`` -- ``(payload, sink, destination)``,
where ``sink`` is a listener index (an int: send from that listening socket), or an object
with ``send(data, addr)`` (a relayed socket or a client connection). STUN Binding and
everything that is not TURN goes to the ``BindingService``. ``handle_timer(now)`` expires
allocations; ``next_timer()`` says when it next has work.

One handler per (method): ``_allocate``, ``_refresh``, ``_create_permission``,
``_channel_bind``, ``_send_indication``; ChannelData and peer data take short fast paths.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from relay.server.binding import BindingService
from relay.server.types import Address, Reply, Transport
from relay.stun import (
    MAGIC_COOKIE,
    AddressErrorCode,
    AttributeType,
    ErrorCode,
    Message,
    MessageClass,
    Method,
    StunError,
    check_fingerprint,
    decode_xor_address,
    encode_attribute,
    encode_xor_address,
    parse,
)
from relay.turn.allocation import (
    CHANNEL_LIFETIME,
    DEFAULT_ALLOCATION_LIFETIME,
    PERMISSION_LIFETIME,
    Allocation,
    AllocationManager,
    Channel,
    Closable,
    RelayPorts,
    RelaySocket,
)
from relay.turn.auth import Authenticated, IntegrityKind, LongTermAuthenticator, Rejected
from relay.turn.counters import TurnCounters
from relay.turn.framing import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    LEGACY_CHANNEL_MAX,
    encode_channel_data,
    parse_channel_data,
)
from relay.turn.policy import PeerPolicy
from relay.turn.reservation import ReservationTokens

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!HHI")
_TLV_HEADER = struct.Struct("!HH")  # type + length of a STUN attribute
UDP_PROTOCOL = 17  # REQUESTED-TRANSPORT value for UDP (RFC 8656 §18.7)
FAMILY_IPV4, FAMILY_IPV6 = 0x01, 0x02  # REQUESTED-ADDRESS-FAMILY values (RFC 8656 §18.8)
_FAMILIES = {FAMILY_IPV4: socket.AF_INET, FAMILY_IPV6: socket.AF_INET6}
_TURN_METHODS = frozenset(
    {Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND, Method.SEND}
)
MAX_PERMISSIONS = 256  # per allocation; more gets 508 (RFC 8656 §9.2 allows refusing)
_DATA_INDICATION_HEADER = struct.Struct("!HHI12s")
_SEND_INDICATION = 0x0016
_U16 = struct.Struct("!H")
# Attribute types as plain ints and TLV prefixes for the Send-indication scanner.
_PEER_TYPE, _DATA_TYPE_INT = int(AttributeType.XOR_PEER_ADDRESS), int(AttributeType.DATA)
_FINGERPRINT_TYPE = int(AttributeType.FINGERPRINT)
_DONT_FRAGMENT_TYPE = int(AttributeType.DONT_FRAGMENT)
_PEER_V4_TLV = struct.pack("!HH", _PEER_TYPE, 8)
_DATA_TYPE = struct.pack("!H", _DATA_TYPE_INT)
_FINGERPRINT_TLV = struct.pack("!HH", _FINGERPRINT_TYPE, 4)
_COOKIE_PAD = MAGIC_COOKIE.to_bytes(4, "big") + bytes(12)  # IPv4 XOR needs the cookie only


@dataclass(frozen=True, slots=True)
class TurnConfig:
    max_lifetime: float = 3600.0
    legacy_channels: bool = True  # accept RFC 5766 channel numbers 0x5000-0x7FFF
    max_bps: int = 0  # relayed bytes per second per allocation, both ways together; 0: no cap

    @property
    def channel_max(self) -> int:
        return LEGACY_CHANNEL_MAX if self.legacy_channels else CHANNEL_MAX


@dataclass(frozen=True, slots=True)
class _Request:
    """An authenticated request being handled: what every handler and response needs."""

    message: Message
    addr: Address
    transport: Transport
    auth: Authenticated
    now: float


def _family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class TurnServer:
    """The TURN protocol core of one relay process."""

    def __init__(
        self,
        binding: BindingService,
        *,
        authenticator: LongTermAuthenticator,
        policy: PeerPolicy,
        ports: RelayPorts,
        allocations: AllocationManager,
        config: TurnConfig | None = None,
        software: str = "",
        counters: TurnCounters | None = None,
        on_event: Callable[[str, Allocation], None] | None = None,
        reservation_key: bytes | None = None,
    ) -> None:
        self.binding = binding
        self._binding = binding.handle
        self.authenticator = authenticator
        self.policy = policy
        self.ports = ports
        self.allocations = allocations
        self.config = config if config is not None else TurnConfig()
        self._channel_max = self.config.channel_max
        self._by_key = allocations.by_key  # the hot paths look allocations up directly
        # Shared by the workers so that any of them honours another's RESERVATION-TOKEN.
        self._tokens = ReservationTokens(reservation_key or os.urandom(32))
        self._max_bps = self.config.max_bps
        self._random = random.Random(os.urandom(16))
        self._peer_cache: dict[bytes, Address] = {}  # XOR-PEER-ADDRESS value -> IPv4 peer
        self._peer_attrs: dict[Address, bytes] = {}  # IPv4 peer -> XOR-PEER-ADDRESS TLV
        self.software = software
        self.counters = counters if counters is not None else TurnCounters()
        self._on_event = on_event

    # ------------------------------------------------------------ entry points

    def handle_client(
        self, data: bytes, addr: Address, transport: Transport, now: float
    ) -> Reply | None:
        """One datagram (or frame) from a client on ``transport``."""
        if data[:2] == b"\x00\x01" and isinstance(transport, int):
            return self._binding(data, addr, transport, now)  # the commonest: Binding
        if len(data) >= 4 and data[0] & 0xC0 == 0x40:
            return self._channel_data(data, addr, transport, now)
        if len(data) >= 20 and not data[0] & 0xC0:
            msg_type, length, cookie = _HEADER.unpack_from(data)
            if cookie == MAGIC_COOKIE and msg_type & 0x3EEF in _TURN_METHODS:
                if msg_type == _SEND_INDICATION and length + 20 == len(data):
                    fields = self._scan_send(data)
                    if fields is not None:
                        return self._send_data(fields[0], fields[1], addr, transport, now)
                try:
                    return self._turn_message(data, addr, transport, now)
                except Exception:  # a bug must not take the worker down; count, carry on
                    self.counters.internal_errors += 1
                    log.exception("internal error on a TURN message from %s", addr)
                    return None
        if isinstance(transport, int):
            return self.binding.handle(data, addr, transport, now)
        # STUN over TCP/TLS: the Binding core answers as for the connection's listener,
        # and the answer goes back on the connection.
        reply = self.binding.handle(data, addr, transport.listener_index, now)
        return None if reply is None else (reply[0], transport, addr)

    def handle_peer(
        self, relay: RelaySocket, data: bytes, addr: Address, now: float
    ) -> Reply | None:
        """One datagram from ``addr`` (a peer) at relayed socket ``relay``."""
        allocation = relay.allocation
        if allocation is None or not allocation.has_permission(addr[0], now):
            self.counters.peer_dropped += 1  # RFC 8656 §10.3: no permission, discard
            return None
        if self._max_bps and not allocation.take(len(data), now, self._max_bps):
            self.counters.bandwidth_dropped += 1
            return None
        allocation.packets_to_client += 1
        allocation.bytes_to_client += len(data)
        channel = allocation.peer_channels.get((addr[0], addr[1]))
        if channel is not None and channel.expiry > now:
            # RFC 8656 §12.6: a bound channel carries it as ChannelData, padded to 4
            # bytes over TCP/TLS (§12.4).
            payload = encode_channel_data(
                channel.number,
                data,
                pad=not isinstance(allocation.client, int),
                channel_max=self._channel_max,
            )
        else:
            payload = self._data_indication(data, addr)
        self.counters.to_client_packets += 1
        self.counters.to_client_bytes += len(data)
        return payload, allocation.client, allocation.client_addr

    def connection_closed(self, connection: Transport, addr: Address) -> None:
        """A TCP/TLS client went away: its allocation goes with it (RFC 8656 §3.1)."""
        allocation = self.allocations.get((connection, addr))
        if allocation is not None:
            self.allocations.remove(allocation)
            self._event("closed", allocation)

    def handle_timer(self, now: float) -> None:
        for allocation in self.allocations.expire(now):
            self._event("expired", allocation)

    def next_timer(self) -> float | None:
        return self.allocations.next_timer()

    def close(self) -> None:
        self.allocations.close()

    # ------------------------------------------------------------ data paths

    def _channel_data(
        self, data: bytes, addr: Address, transport: Transport, now: float
    ) -> Reply | None:
        # The hottest path of a TURN server: kept to plain dict lookups and arithmetic.
        allocation = self._by_key.get((transport, addr))
        if allocation is None:
            self.counters.client_dropped += 1
            return None
        try:
            number, payload = parse_channel_data(data, channel_max=self._channel_max)
        except StunError:
            # RFC 8656 §12.4/§12.5: too short for its length, more than padding after it,
            # or a reserved number: silently discarded.
            self.counters.client_dropped += 1
            return None
        channel = allocation.channels.get(number)
        # An unbound or expired channel, or a lapsed permission: discarded too.
        if (
            channel is None
            or channel.expiry <= now
            or allocation.permissions.get(channel.peer[0], 0.0) <= now
        ):
            self.counters.client_dropped += 1
            return None
        length = len(payload)
        if self._max_bps and not allocation.take(length, now, self._max_bps):
            self.counters.bandwidth_dropped += 1
            return None
        allocation.packets_to_peer += 1
        allocation.bytes_to_peer += length
        counters = self.counters
        counters.to_peer_packets += 1
        counters.to_peer_bytes += length
        return payload, channel.relay, channel.peer

    def _data_indication(self, data: bytes, peer: Address) -> bytes:
        """A Data indication (RFC 8656 §11.4): XOR-PEER-ADDRESS and DATA, no integrity."""
        # An indication is never matched to anything, so its transaction id only needs to
        # vary, not to be unpredictable: a PRNG saves a system call per datagram.
        tid = self._random.randbytes(12)
        if len(peer) == 2 and ":" not in peer[0]:
            peer_attr = self._peer_attrs.get(peer)
            if peer_attr is None:  # IPv4: XOR-ed with the cookie only, so cacheable
                peer_attr = encode_attribute(
                    AttributeType.XOR_PEER_ADDRESS, encode_xor_address(peer[0], peer[1], tid)
                )
                if len(self._peer_attrs) >= 4096:
                    self._peer_attrs.clear()
                self._peer_attrs[peer] = peer_attr
        else:
            peer_attr = encode_attribute(
                AttributeType.XOR_PEER_ADDRESS, encode_xor_address(peer[0], peer[1], tid)
            )
        size = len(data)
        padding = -size & 3
        header = _DATA_INDICATION_HEADER.pack(
            0x0017, len(peer_attr) + 4 + size + padding, MAGIC_COOKIE, tid
        )
        parts = (header, peer_attr, _TLV_HEADER.pack(AttributeType.DATA, size), data)
        return b"".join((*parts, bytes(padding))) if padding else b"".join(parts)

    # ------------------------------------------------------------ STUN messages

    def _turn_message(
        self, data: bytes, addr: Address, transport: Transport, now: float
    ) -> Reply | None:
        try:
            message = parse(data)
        except StunError as exc:
            self.counters.malformed += 1
            if data[1] & 0x10 or data[0] & 0x01:  # not a request: nothing to answer
                return None
            if isinstance(transport, int):
                return self.binding.bad_request(data, addr, transport, str(exc))
            reply = self.binding.bad_request(data, addr, transport.listener_index, str(exc))
            return reply[0], transport, addr
        if message.message_class == MessageClass.INDICATION:
            if message.method == Method.SEND:
                return self._send_indication(message, addr, transport, now)
            return None
        if message.message_class != MessageClass.REQUEST:
            return None
        self.counters.count_request(message.method)
        auth = self.authenticator.authenticate(message, addr[0], now)
        if isinstance(auth, Rejected):
            if auth.failure != "missing_integrity":  # the normal first round trip
                self.counters.count_auth_failure(auth.failure)
            self.counters.count_error(auth.code)
            response = self._error_message(message, auth.code, auth.reason, auth.attributes)
            return response.encode(fingerprint=message.has_fingerprint), transport, addr
        req = _Request(message, addr, transport, auth, now)
        if message.unknown_required:
            # RFC 8489 §6.3.1 (after authentication, §9.2.4): unknown comprehension-
            # required attributes get 420 listing them.
            unknown = ((AttributeType.UNKNOWN_ATTRIBUTES, tuple(message.unknown_required)),)
            return self._error(req, 420, "Unknown Attribute", unknown)
        allocation = self.allocations.get((transport, addr))
        if message.method == Method.ALLOCATE:
            return self._allocate(req, allocation)
        if allocation is None:
            return self._error(req, 437, "Allocation Mismatch")
        if auth.username != allocation.username:
            # RFC 8656 §5: requests on an allocation must use the credentials that made it.
            return self._error(req, 441, "Wrong Credentials")
        if message.method == Method.REFRESH:
            return self._refresh(req, allocation)
        if message.method == Method.CREATE_PERMISSION:
            return self._create_permission(req, allocation)
        return self._channel_bind(req, allocation)

    def _lifetime(self, message: Message) -> float:
        # RFC 8656 §7.2 / §8: min(requested, maximum); never below the default.
        requested = message.get(AttributeType.LIFETIME)
        if requested is None:
            return DEFAULT_ALLOCATION_LIFETIME
        return max(DEFAULT_ALLOCATION_LIFETIME, min(float(requested), self.config.max_lifetime))

    def _allocate(self, req: _Request, existing: Allocation | None) -> Reply:
        message, auth, now = req.message, req.auth, req.now
        if existing is not None:
            if (
                existing.transaction_id == message.transaction_id
                and auth.username == existing.username
            ):
                # RFC 8656 §7.2: a retransmitted Allocate gets the success again.
                return self._allocate_success(req, existing, None)
            return self._error(req, 437, "Allocation Mismatch")
        protocol = message.get(AttributeType.REQUESTED_TRANSPORT)
        if protocol is None:
            return self._error(req, 400, "REQUESTED-TRANSPORT missing")
        if protocol != UDP_PROTOCOL:
            return self._error(req, 442, "Unsupported Transport Protocol")
        token = message.get(AttributeType.RESERVATION_TOKEN)
        even_port = message.get(AttributeType.EVEN_PORT)
        requested_family = message.get(AttributeType.REQUESTED_ADDRESS_FAMILY)
        additional_family = message.get(AttributeType.ADDITIONAL_ADDRESS_FAMILY)
        if token is not None and (even_port is not None or requested_family is not None):
            # RFC 8656 §7.2: RESERVATION-TOKEN excludes EVEN-PORT and REQUESTED-ADDRESS-FAMILY.
            return self._error(req, 400, "Bad Request")
        if additional_family is not None and (
            requested_family is not None or additional_family != FAMILY_IPV6
        ):
            # RFC 8656 §7.2: ADDITIONAL-ADDRESS-FAMILY is IPv6 only and excludes
            # REQUESTED-ADDRESS-FAMILY.
            return self._error(req, 400, "Bad Request")
        if requested_family is not None and requested_family not in _FAMILIES:
            return self._error(req, 440, "Address Family not Supported")
        quota = self.allocations.check_quota(auth.user)
        if quota is not None:
            self.counters.quota_rejections += 1
            return self._error(req, 486, "Allocation Quota Reached")

        relays: dict[socket.AddressFamily, RelaySocket] = {}
        address_error: AddressErrorCode | None = None
        reservation: bytes | None = None
        if token is not None:
            # Any worker can check the token and claim its port (relay.turn.reservation).
            reserved = self._tokens.verify(token, now)
            claimed = None if reserved is None else self.ports.claim(*reserved)
            if claimed is None:
                return self._error(req, 508, "Insufficient Capacity")
            self.allocations.release(token)
            relays[claimed.family] = claimed
        else:
            family = _FAMILIES[requested_family or FAMILY_IPV4]
            if family not in self.ports.families():
                return self._error(req, 440, "Address Family not Supported")
            if even_port is not None:
                pair = self._bind_even(family, reserve=bool(even_port))
                if pair is None:
                    return self._error(req, 508, "Insufficient Capacity")
                relay, holder = pair
                if holder is not None:
                    reservation = self._tokens.mint(family, relay.address[1] + 1, now)
                    self.allocations.reserve(reservation, holder, now)
            else:
                bound = self.ports.bind(family, None)
                if bound is None:
                    return self._error(req, 508, "Insufficient Capacity")
                relay = bound
            relays[family] = relay
            if additional_family is not None:
                # A dual allocation (RFC 8656 §7.2): failing the IPv6 half is reported in
                # ADDRESS-ERROR-CODE, the IPv4 half still succeeds.
                extra = (
                    self.ports.bind(socket.AF_INET6, None)
                    if socket.AF_INET6 in self.ports.families()
                    else None
                )
                if extra is None:
                    address_error = AddressErrorCode(
                        FAMILY_IPV6, 440, "Address Family not Supported"
                    )
                else:
                    relays[socket.AF_INET6] = extra
        allocation = Allocation(
            key=(req.transport, req.addr),
            client=req.transport,
            client_addr=req.addr,
            username=auth.username,
            user=auth.user,
            relays=relays,
            expiry=now + self._lifetime(message),
            tokens=float(self._max_bps),
            refilled=now,
            transaction_id=message.transaction_id,
            reservation_token=reservation,
        )
        self.allocations.add(allocation)
        self.counters.allocations_created += 1
        self._event("allocated", allocation)
        return self._allocate_success(req, allocation, address_error)

    def _bind_even(
        self, family: socket.AddressFamily, *, reserve: bool
    ) -> tuple[RelaySocket, Closable | None] | None:
        """An even port, and with ``reserve`` the next one held too (RFC 8656 §7.2)."""
        for _ in range(64):
            first = self.ports.bind(family, None)
            if first is None:
                return None
            port = first.address[1]
            if port & 1:
                first.close()
                continue
            if not reserve:
                return first, None
            holder = self.ports.hold(family, port + 1)
            if holder is not None:
                return first, holder
            first.close()
        return None

    def _allocate_success(
        self, req: _Request, allocation: Allocation, address_error: AddressErrorCode | None
    ) -> Reply:
        attributes: list[tuple[int, object]] = [
            (AttributeType.XOR_RELAYED_ADDRESS, relay.address)
            for relay in allocation.relays.values()
        ]
        remaining = allocation.expiry - req.now
        attributes.append((AttributeType.LIFETIME, max(0, int(remaining))))
        if allocation.reservation_token is not None:
            attributes.append((AttributeType.RESERVATION_TOKEN, allocation.reservation_token))
        if address_error is not None:
            attributes.append((AttributeType.ADDRESS_ERROR_CODE, address_error))
        attributes.append((AttributeType.XOR_MAPPED_ADDRESS, (req.addr[0], req.addr[1])))
        return self._success(req, attributes)

    def _refresh(self, req: _Request, allocation: Allocation) -> Reply:
        message, now = req.message, req.now
        requested = message.get(AttributeType.LIFETIME)
        family_value = message.get(AttributeType.REQUESTED_ADDRESS_FAMILY)
        if family_value is not None:
            family = _FAMILIES.get(family_value)
            if family is None or family not in allocation.relays:
                # RFC 8656 §8: refreshing a family the allocation does not have.
                return self._error(req, 443, "Peer Address Family Mismatch")
            if requested == 0 and len(allocation.relays) > 1:
                allocation.drop_family(family)
                self.allocations.sync(allocation)
                return self._success(req, [(AttributeType.LIFETIME, 0)])
        if requested == 0:
            self.allocations.remove(allocation)
            self._event("deleted", allocation)
            return self._success(req, [(AttributeType.LIFETIME, 0)])
        lifetime = self._lifetime(message)
        allocation.expiry = now + lifetime
        self.allocations.schedule(allocation)
        self._event("refreshed", allocation)
        return self._success(req, [(AttributeType.LIFETIME, int(lifetime))])

    def _check_peer(self, allocation: Allocation, peer: tuple[str, int]) -> tuple[int, str] | None:
        """The error for a peer address this allocation may not use, or ``None``."""
        if _family_of(peer[0]) not in allocation.relays:
            return 443, "Peer Address Family Mismatch"
        if not self.policy.permits(peer[0]):
            self.counters.policy_rejections += 1
            return 403, "Forbidden: peer address not permitted"
        return None

    def _create_permission(self, req: _Request, allocation: Allocation) -> Reply:
        message, now = req.message, req.now
        peers = message.get_all(AttributeType.XOR_PEER_ADDRESS)
        if not peers:
            return self._error(req, 400, "XOR-PEER-ADDRESS missing")
        for peer in peers:  # all or nothing (RFC 8656 §9.2)
            problem = self._check_peer(allocation, peer)
            if problem is not None:
                return self._error(req, *problem)
        new = {peer[0] for peer in peers} - allocation.permissions.keys()
        if len(allocation.permissions) + len(new) > MAX_PERMISSIONS:
            return self._error(req, 508, "Insufficient Capacity")
        expiry = now + PERMISSION_LIFETIME
        for peer in peers:
            allocation.permissions[peer[0]] = expiry
        self.counters.permissions_created += len(new)
        self.allocations.sync(allocation)  # channels to these peers may live longer
        self._event("permission", allocation)
        return self._success(req, [])

    def _channel_bind(self, req: _Request, allocation: Allocation) -> Reply:
        message, now = req.message, req.now
        number = message.get(AttributeType.CHANNEL_NUMBER)
        peer = message.get(AttributeType.XOR_PEER_ADDRESS)
        if number is None or peer is None:
            return self._error(req, 400, "CHANNEL-NUMBER and XOR-PEER-ADDRESS required")
        if not CHANNEL_MIN <= number <= self._channel_max:
            return self._error(req, 400, "channel number out of range")
        peer = (peer[0], peer[1])
        bound = allocation.channel_for_number(number, now)
        by_peer = allocation.peer_channels.get(peer)
        if by_peer is not None and by_peer.expiry <= now:
            by_peer = None
        # RFC 8656 §11.2: a number bound to another peer, a peer bound to another number,
        # or either still cooling down after an expired binding of another pairing: 400.
        if (bound is not None and bound.peer != peer) or (
            by_peer is not None and by_peer.number != number
        ):
            return self._error(req, 400, "channel already in use")
        if bound is None and (number in allocation.cooldown or peer in allocation.cooldown):
            return self._error(req, 400, "channel cooling down")
        problem = self._check_peer(allocation, peer)
        if problem is not None:
            return self._error(req, *problem)
        if bound is None:
            stale = allocation.channels.pop(number, None)
            if stale is not None:
                allocation.peer_channels.pop(stale.peer, None)
            channel = Channel(
                number, peer, now + CHANNEL_LIFETIME, allocation.relays[_family_of(peer[0])]
            )
            allocation.channels[number] = channel
            allocation.peer_channels[peer] = channel
            self.counters.channels_created += 1
        else:
            bound.expiry = now + CHANNEL_LIFETIME
        allocation.permissions[peer[0]] = max(
            allocation.permissions.get(peer[0], 0.0), now + PERMISSION_LIFETIME
        )
        self.allocations.sync(allocation)
        self._event("channel", allocation)
        return self._success(req, [])

    def _send_indication(
        self, message: Message, addr: Address, transport: Transport, now: float
    ) -> Reply | None:
        peer = message.get(AttributeType.XOR_PEER_ADDRESS)
        data = message.get(AttributeType.DATA)
        # RFC 8656 §10.2: no peer or no data: discard.
        if peer is None or data is None:
            self.counters.client_dropped += 1
            return None
        return self._send_data((peer[0], peer[1]), data, addr, transport, now)

    def _send_data(
        self, peer: Address, data: bytes, addr: Address, transport: Transport, now: float
    ) -> Reply | None:
        allocation = self.allocations.get((transport, addr))
        # RFC 8656 §10.2: no allocation or no permission: discard.
        if allocation is None or not allocation.has_permission(peer[0], now):
            self.counters.client_dropped += 1
            return None
        relay = allocation.relays.get(_family_of(peer[0]))
        if relay is None:
            self.counters.client_dropped += 1
            return None
        if self._max_bps and not allocation.take(len(data), now, self._max_bps):
            self.counters.bandwidth_dropped += 1
            return None
        allocation.packets_to_peer += 1
        allocation.bytes_to_peer += len(data)
        self.counters.to_peer_packets += 1
        self.counters.to_peer_bytes += len(data)
        return data, relay, peer

    def _scan_send(self, data: bytes) -> tuple[Address, bytes] | None:
        """(peer, data) of a plain Send indication -- XOR-PEER-ADDRESS, DATA, optionally
        DONT-FRAGMENT and a last FINGERPRINT -- without building a Message; ``None`` for
        anything else, which then takes the full parser (the hot path of Send-mode
        clients; tests check both paths agree)."""
        end = len(data)
        if data[20:24] == _PEER_V4_TLV and data[32:34] == _DATA_TYPE and end >= 36:
            # The usual layout: XOR-PEER-ADDRESS (IPv4), DATA, maybe FINGERPRINT.
            length = _U16.unpack_from(data, 34)[0]
            padded = 36 + ((length + 3) & ~3)
            if padded + 8 == end and data[padded : padded + 4] == _FINGERPRINT_TLV:
                if not check_fingerprint(data, padded):
                    return None
            elif padded != end:
                return None
            peer_value, payload = data[24:32], data[36 : 36 + length]
        else:
            walked_peer, walked_payload = self._walk_send(data, end)
            if walked_peer is None or walked_payload is None:
                return None
            peer_value, payload = walked_peer, walked_payload
        peer = self._peer_cache.get(peer_value)
        if peer is None:
            if len(peer_value) != 8 or peer_value[1] != 1:
                return None  # IPv6 (XOR-ed with the transaction id) or malformed
            try:
                peer = decode_xor_address(peer_value, _COOKIE_PAD)
            except StunError:
                return None
            if len(self._peer_cache) >= 4096:
                self._peer_cache.clear()
            self._peer_cache[peer_value] = peer
        return peer, payload

    @staticmethod
    def _walk_send(data: bytes, end: int) -> tuple[bytes | None, bytes | None]:
        """(XOR-PEER-ADDRESS value, DATA) of a Send indication in any order, or Nones
        when it holds anything else (then the full parser decides)."""
        pos = 20
        peer_value = payload = None
        while pos + 4 <= end:
            attr_type, length = _TLV_HEADER.unpack_from(data, pos)
            start = pos + 4
            stop = start + length
            if stop > end:
                return None, None
            if attr_type == _PEER_TYPE and peer_value is None:
                peer_value = data[start:stop]
            elif attr_type == _DATA_TYPE_INT and payload is None:
                payload = data[start:stop]
            elif attr_type == _FINGERPRINT_TYPE and stop == end and length == 4:
                if not check_fingerprint(data, pos):
                    return None, None  # the full parser drops it and counts it
            elif attr_type != _DONT_FRAGMENT_TYPE or length:
                return None, None
            pos = start + ((length + 3) & ~3)
        if pos != end:
            return None, None
        return peer_value, payload

    # ------------------------------------------------------------ responses

    def _success(self, req: _Request, attributes: list[tuple[int, object]]) -> Reply:
        if self.software:
            attributes.append((AttributeType.SOFTWARE, self.software))
        message = req.message
        response = Message(
            message.method, MessageClass.SUCCESS, message.transaction_id, tuple(attributes)
        )
        return self._protected(response, req), req.transport, req.addr

    def _error(
        self,
        req: _Request,
        code: int,
        reason: str,
        extra: tuple[tuple[int, object], ...] = (),
    ) -> Reply:
        """An error response, protected with the request's credentials."""
        self.counters.count_error(code)
        response = self._error_message(req.message, code, reason, extra)
        return self._protected(response, req), req.transport, req.addr

    def _error_message(
        self, message: Message, code: int, reason: str, extra: tuple[tuple[int, object], ...]
    ) -> Message:
        attributes: list[tuple[int, object]] = [(AttributeType.ERROR_CODE, ErrorCode(code, reason))]
        attributes.extend(extra)
        if self.software:
            attributes.append((AttributeType.SOFTWARE, self.software))
        return Message(
            message.method, MessageClass.ERROR, message.transaction_id, tuple(attributes)
        )

    @staticmethod
    def _protected(response: Message, req: _Request) -> bytes:
        # RFC 8489 §9.2.4: protect the response with the integrity type of the request.
        fingerprint = req.message.has_fingerprint
        if req.auth.integrity is IntegrityKind.SHA256:
            return response.encode(integrity_sha256_key=req.auth.key, fingerprint=fingerprint)
        return response.encode(integrity_key=req.auth.key, fingerprint=fingerprint)

    def _event(self, kind: str, allocation: Allocation) -> None:
        self.allocations.fold(allocation)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "allocation %s: client %s user %r relays %s; to peers %d packets %d bytes, "
                "to client %d packets %d bytes",
                kind,
                allocation.client_addr,
                allocation.user,
                [r.address for r in allocation.relays.values()],
                allocation.packets_to_peer,
                allocation.bytes_to_peer,
                allocation.packets_to_client,
                allocation.bytes_to_client,
            )
        if self._on_event is not None:
            self._on_event(kind, allocation)
