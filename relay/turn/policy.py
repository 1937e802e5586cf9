"""Which peer addresses a TURN client may reach through the relay (deny by default).

RFC 8656 §9.1/§12.1 let a server refuse a CreatePermission or ChannelBind with 403
(Forbidden) when its policy does not allow the peer; RFC 8656 §21.3 warns that a relay
otherwise gives clients a foothold inside the server's own network. coturn got this
wrong twice:

* CVE-2020-26262: the loopback check could be bypassed with ``0.0.0.0``, ``::`` and
  ``::1`` as peer address (the kernel delivers those to the local host).
* CVE-2026-27624: ``::ffff:127.0.0.1`` (IPv4-mapped IPv6, RFC 4291 §2.5.5.2) passed the
  loopback/zero checks and every IPv4 ``denied-peer-ip`` range, because the IPv6 peer was
  never reduced to the IPv4 address it embeds; coturn PR #1945 later extended the fix to
  the IPv4-compatible, 6to4 and NAT64 encodings.

Rules of :class:`PeerPolicy`, in this order:

1. Parse the address strictly (``socket.inet_pton``: dotted quad or RFC 4291 text, no
   zone id, no brackets, no port). Anything unparseable, or not a ``str``, is denied.
2. Normalise: an IPv6 address that embeds an IPv4 address is judged *as that IPv4
   address* (see :data:`EMBEDDED_IPV4_PREFIXES`): IPv4-mapped ``::ffff:0:0/96``,
   IPv4-translated ``::ffff:0:0:0/96``, IPv4-compatible ``::/96`` (except ``::`` and
   ``::1``, which stay IPv6 unspecified/loopback), NAT64 well-known prefix
   ``64:ff9b::/96`` and 6to4 ``2002::/16`` (IPv4 in bits 16-47). Encodings whose IPv4
   position is site-specific (NAT64 local-use ``64:ff9b:1::/48``, RFC 8215) or
   obfuscated (Teredo ``2001::/32``, RFC 4380) are denied outright instead.
3. ``deny`` (operator CIDRs) always wins. An IPv4 ``deny`` CIDR matches the normalised
   address; an IPv6 ``deny`` CIDR matches the address as written, so ``deny=["2000::/3"]``
   also denies ``2002:0808:0808::`` although that is judged as ``8.8.8.8`` otherwise.
4. ``allow`` (operator CIDRs) overrides the default deny list. It matches the
   *normalised* address only: ``allow=["127.0.0.0/8"]`` admits ``127.0.0.1`` and every
   encoding of it (``::ffff:127.0.0.1``, ``2002:7f00:1::``, ...), while an IPv6 ``allow``
   CIDR never admits an embedded-IPv4 address (``allow=["2000::/3"]`` does not open
   ``2002:7f00:1::``). An ``allow`` CIDR that lies wholly inside an embedding prefix could
   match nothing and is rejected with ValueError (write the IPv4 range instead).
5. Otherwise the address is permitted iff it is not in the default deny list
   (:data:`DEFAULT_DENY_IPV4`, :data:`DEFAULT_DENY_IPV6`).

Beyond the special-purpose registries, the IPv6 default list denies everything outside
``2000::/3``, the only block IANA allocates for global unicast (RFC 4291 §2.4), and all of
the IETF protocol assignments ``2001::/23`` (like ``192.0.0.0/24`` for IPv4), anycast
exceptions such as ``2001:1::2`` (TURN anycast) included.

Speed: every rule is compiled at construction into one sorted table of interval starts
per family; :meth:`PeerPolicy.permits` is ``inet_pton`` + ``int.from_bytes`` + one
``bisect``. No ``ipaddress`` objects on the hot path.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Final

__all__ = [
    "DEFAULT_DENY_IPV4",
    "DEFAULT_DENY_IPV6",
    "EMBEDDED_IPV4_PREFIXES",
    "PeerPolicy",
    "embedded_ipv4",
]

#: Default-denied IPv4 networks (RFC 6890 / IANA special-purpose registry), with reasons.
DEFAULT_DENY_IPV4: Final[tuple[tuple[str, str], ...]] = (
    ("0.0.0.0/8", "'this network', incl. unspecified 0.0.0.0 (RFC 791; CVE-2020-26262)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space / CGNAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927), incl. cloud metadata 169.254.169.254"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890), denied as a whole"),
    ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112), incl. limited broadcast 255.255.255.255"),
)

#: Default-denied IPv6 networks, applied to addresses that embed no IPv4 address.
DEFAULT_DENY_IPV6: Final[tuple[tuple[str, str], ...]] = (
    ("::/128", "unspecified (RFC 4291 §2.5.2; CVE-2020-26262)"),
    ("::1/128", "loopback (RFC 4291 §2.5.3; CVE-2020-26262)"),
    ("::/3", "not global unicast (RFC 4291 §2.4: only 2000::/3 is allocated)"),
    ("64:ff9b:1::/48", "NAT64 local-use prefix (RFC 8215): IPv4 position is site-specific"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/23", "IETF protocol assignments (RFC 2928), denied as a whole"),
    ("2001::/32", "Teredo (RFC 4380): embeds obfuscated IPv4 addresses"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("4000::/2", "not global unicast (RFC 4291 §2.4)"),
    ("8000::/1", "not global unicast (RFC 4291 §2.4)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291 §2.5.6)"),
    ("fec0::/10", "site-local, deprecated (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291 §2.7)"),
)

#: IPv6 encodings judged as the IPv4 address they embed (rule 2 of the module docstring).
EMBEDDED_IPV4_PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("::/96", "IPv4-compatible, deprecated (RFC 4291 §2.5.5.1); :: and ::1 excepted"),
    ("::ffff:0:0/96", "IPv4-mapped (RFC 4291 §2.5.5.2; CVE-2026-27624)"),
    ("::ffff:0:0:0/96", "IPv4-translated (RFC 2765 §2.1)"),
    ("64:ff9b::/96", "NAT64 well-known prefix (RFC 6052 §2.1)"),
    ("2002::/16", "6to4, IPv4 in bits 16-47 (RFC 3056 §2)"),
)

_V4_MAX: Final = (1 << 32) - 1
_V6_MAX: Final = (1 << 128) - 1
_MAPPED: Final = 0xFFFF  # value >> 32 of ::ffff:a.b.c.d
_TRANSLATED: Final = 0xFFFF << 16  # value >> 32 of ::ffff:0:a.b.c.d
_NAT64_WKP: Final = 0x0064FF9B << 64  # value >> 32 of 64:ff9b::a.b.c.d
_SIX_TO_FOUR: Final = 0x2002  # value >> 112 of 2002:aabb:ccdd::


def embedded_ipv4(value: int) -> int | None:
    """The IPv4 address (as int) embedded in the 128-bit IPv6 ``value``, if any."""
    high = value >> 32
    if high == 0:
        return value if value > 1 else None  # ::a.b.c.d, but :: and ::1 are IPv6
    if high in (_MAPPED, _TRANSLATED, _NAT64_WKP):
        return value & _V4_MAX
    if value >> 112 == _SIX_TO_FOUR:
        return (value >> 80) & _V4_MAX
    return None


_Range = tuple[int, int]


def _parse_networks(cidrs: Sequence[str], what: str) -> list[tuple[int, _Range, str]]:
    """Validate CIDR strings; return (IP version, (first, last) as ints, normalised text)."""
    if isinstance(cidrs, str | bytes):
        raise ValueError(f"{what} must be a sequence of CIDR strings, not a single string")
    networks: list[tuple[int, _Range, str]] = []
    for cidr in cidrs:
        if not isinstance(cidr, str):
            raise ValueError(f"{what}: {cidr!r} is not a CIDR string")
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"{what}: {cidr!r} is not a valid CIDR ({exc})") from None
        span = (int(network.network_address), int(network.broadcast_address))
        networks.append((network.version, span, str(network)))
    return networks


def _ranges(table: Iterable[tuple[str, str]]) -> list[_Range]:
    spans = []
    for cidr, _reason in table:
        network = ipaddress.ip_network(cidr)
        spans.append((int(network.network_address), int(network.broadcast_address)))
    return spans


def _member(value: int, ranges: Sequence[_Range]) -> bool:
    return any(low <= value <= high for low, high in ranges)


class _Table:
    """A predicate over one address family compiled to sorted interval starts."""

    __slots__ = ("_flags", "_starts")

    def __init__(self, top: int, ranges: Iterable[_Range], predicate: Callable[[int], bool]):
        # Every range boundary starts a segment, so the predicate (built from membership
        # in those ranges) is constant on each segment: evaluate it at the segment start.
        points = {0}
        for low, high in ranges:
            points.add(low)
            if high < top:
                points.add(high + 1)
        starts: list[int] = []
        flags: list[bool] = []
        for start in sorted(points):
            flag = predicate(start)
            if not flags or flags[-1] != flag:
                starts.append(start)
                flags.append(flag)
        self._starts = starts
        self._flags = flags

    def __call__(self, value: int) -> bool:
        return self._flags[bisect_right(self._starts, value) - 1]


class PeerPolicy:
    """Decides which peer IP addresses a TURN client may reach (deny by default).

    ``allow`` and ``deny`` are CIDR strings (``"127.0.0.0/8"``, ``"::1/128"``, host bits
    must be zero); invalid ones raise ValueError. See the module docstring for the rules.
    """

    __slots__ = ("_allow", "_deny", "_deny_v6_explicit", "_v4", "_v6")

    def __init__(self, *, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> None:
        allow_nets = _parse_networks(allow, "allow")
        deny_nets = _parse_networks(deny, "deny")
        self._allow = tuple(text for _, _, text in allow_nets)
        self._deny = tuple(text for _, _, text in deny_nets)
        allow_v4 = [span for version, span, _ in allow_nets if version == 4]
        allow_v6 = [span for version, span, _ in allow_nets if version == 6]
        deny_v4 = [span for version, span, _ in deny_nets if version == 4]
        deny_v6 = [span for version, span, _ in deny_nets if version == 6]
        embedding = _ranges(EMBEDDED_IPV4_PREFIXES)
        for version, (low, high), text in allow_nets:
            if (
                version == 6
                and embedded_ipv4(low) is not None
                and any(e_low <= low and high <= e_high for e_low, e_high in embedding)
            ):
                raise ValueError(
                    f"allow: {text} lies inside an IPv4-embedding prefix; such peers are "
                    "judged by their embedded IPv4 address, so allow the IPv4 range instead"
                )
        default_v4 = _ranges(DEFAULT_DENY_IPV4)
        default_v6 = _ranges(DEFAULT_DENY_IPV6)

        def permitted_v4(value: int) -> bool:
            if _member(value, deny_v4):
                return False
            return _member(value, allow_v4) or not _member(value, default_v4)

        def permitted_v6(value: int) -> bool:
            if _member(value, deny_v6):
                return False
            return _member(value, allow_v6) or not _member(value, default_v6)

        self._v4 = _Table(_V4_MAX, [*deny_v4, *allow_v4, *default_v4], permitted_v4)
        self._v6 = _Table(_V6_MAX, [*deny_v6, *allow_v6, *default_v6], permitted_v6)
        self._deny_v6_explicit = (
            _Table(_V6_MAX, deny_v6, lambda value: _member(value, deny_v6)) if deny_v6 else None
        )

    def __repr__(self) -> str:
        return f"PeerPolicy(allow={self._allow!r}, deny={self._deny!r})"

    def permits(self, ip: str) -> bool:
        """True if the relay may send to / accept from ``ip``; never raises.

        ``ip`` is an address as the STUN codec returns it (``inet_ntop`` text); any other
        input that ``inet_pton`` does not accept is denied.
        """
        try:
            if ":" in ip:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
            else:
                return self._v4(int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big"))
        except (OSError, ValueError, TypeError):
            return False
        v4 = embedded_ipv4(value)
        if v4 is None:
            return self._v6(value)
        if self._deny_v6_explicit is not None and self._deny_v6_explicit(value):
            return False
        return self._v4(v4)
