"""Peer address policy: every default-denied range and IPv4-in-IPv6 encoding (CVE-2020-26262,
CVE-2026-27624), operator overrides, garbage input, and a property test against an
independent reference built on ``ipaddress``."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.turn.policy import (
    DEFAULT_DENY_IPV4,
    DEFAULT_DENY_IPV6,
    EMBEDDED_IPV4_PREFIXES,
    PeerPolicy,
    embedded_ipv4,
)

DEFAULT = PeerPolicy()
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _edges(cidr: str) -> list[str]:
    """First, second, middle, last-but-one and last address of a network."""
    net = ipaddress.ip_network(cidr)
    first, last = int(net.network_address), int(net.broadcast_address)
    values = {first, min(first + 1, last), (first + last) // 2, max(last - 1, first), last}
    cls = V4 if net.version == 4 else V6
    return [str(cls(v)) for v in sorted(values)]


def _forms(v4: str) -> list[str]:
    """Every IPv6 encoding of ``v4`` the policy knows, in several spellings."""
    n = int(V4(v4))
    mapped = V6((0xFFFF << 32) | n)
    translated = V6((0xFFFF << 48) | n)
    nat64 = V6((0x64FF9B << 96) | n)
    sixtofour = V6((0x2002 << 112) | (n << 80) | 1)
    compat = V6(n)
    return [
        f"::ffff:{v4}",  # CVE-2026-27624
        f"::FFFF:{v4}",
        f"0:0:0:0:0:ffff:{v4}",
        mapped.exploded,
        f"::{v4}",
        compat.exploded,
        f"::ffff:0:{v4}",
        str(translated),
        translated.exploded,
        f"64:ff9b::{v4}",
        str(nat64),
        nat64.exploded,
        str(sixtofour),
        sixtofour.exploded,
        str(V6((0x2002 << 112) | (n << 80) | (0xFFFF << 64) | 0xABCD)),
    ]


# --- default deny ---------------------------------------------------------------------

V4_DENIED_RANGES = [cidr for cidr, _ in DEFAULT_DENY_IPV4]
V6_DENIED_RANGES = [cidr for cidr, _ in DEFAULT_DENY_IPV6]
BRIEF_V4 = [
    "127.0.0.0/8",
    "0.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "240.0.0.0/4",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "198.18.0.0/15",
    "192.0.0.0/24",
]
BRIEF_V6 = [
    "::1/128",
    "::/128",
    "fe80::/10",
    "ff00::/8",
    "2001:db8::/32",
    "fc00::/7",
    "fec0::/10",
    "100::/64",
    "2001::/32",
    "64:ff9b:1::/48",
]


@pytest.mark.parametrize("cidr", sorted(set(V4_DENIED_RANGES + BRIEF_V4)))
def test_default_denied_ipv4_ranges(cidr: str) -> None:
    for ip in _edges(cidr):
        assert not DEFAULT.permits(ip), ip


@pytest.mark.parametrize("cidr", sorted(set(V6_DENIED_RANGES + BRIEF_V6)))
def test_default_denied_ipv6_ranges(cidr: str) -> None:
    for ip in _edges(cidr):
        assert not DEFAULT.permits(ip), ip
        assert not DEFAULT.permits(V6(ip).exploded), ip


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.255.255.254",
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.127.255.255",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.0.10",  # TURN anycast, inside the IETF protocol assignments /24
        "192.88.99.1",
        "::1",
        "::",
        "0:0:0:0:0:0:0:1",
        "fe80::1",
        "febf:ffff::1",
        "ff02::1",
        "fd00::1",
        "fc00::",
        "fec0::1",
        "2001:db8::1",
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:1::2",  # TURN anycast, inside 2001::/23
        "100::1",
        "64:ff9b:1::808:808",
        "3fff::1",
        "4000::1",
        "5f00::1",
        "1000::1",
    ],
)
def test_denied_addresses(ip: str) -> None:
    assert not DEFAULT.permits(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "8.8.8.8",
        "1.1.1.1",
        "1.0.0.0",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.0",
        "192.0.3.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700::1111",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2001:200::1",  # just past 2001::/23
        "2001:db9::1",
        "2003::1",
        "2000::",
        "3ffe::1",
        "3fff:1000::1",  # just past 3fff::/20
        "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::1.1.1.1",
        "2002:808:808::1",
    ],
)
def test_permitted_addresses(ip: str) -> None:
    assert DEFAULT.permits(ip)


@pytest.mark.parametrize("v4", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "0.0.0.0"])
def test_every_ipv6_embedding_of_a_denied_ipv4_is_denied(v4: str) -> None:
    for form in _forms(v4):
        assert not DEFAULT.permits(form), form


@pytest.mark.parametrize("v4", ["8.8.8.8", "1.1.1.1", "93.184.216.34"])
def test_every_ipv6_embedding_of_a_public_ipv4_is_judged_as_it(v4: str) -> None:
    for form in _forms(v4):
        assert DEFAULT.permits(form), form
    assert not PeerPolicy(deny=[f"{v4}/32"]).permits(f"::ffff:{v4}")


@pytest.mark.parametrize("cidr", [cidr for cidr, _ in DEFAULT_DENY_IPV4])
def test_denied_ipv4_ranges_through_ipv4_mapped(cidr: str) -> None:
    for ip in _edges(cidr):
        assert not DEFAULT.permits(f"::ffff:{ip}"), ip
        assert not DEFAULT.permits(f"64:ff9b::{ip}"), ip


def test_cve_2020_26262_cases() -> None:
    for ip in ("0.0.0.0", "::", "::1", "[::1]", "::ffff:0.0.0.0", "::0.0.0.0", "0.0.0.1"):
        assert not DEFAULT.permits(ip), ip


def test_embedded_ipv4_extraction() -> None:
    assert embedded_ipv4(int(V6("::ffff:127.0.0.1"))) == int(V4("127.0.0.1"))
    assert embedded_ipv4(int(V6("::ffff:0:127.0.0.1"))) == int(V4("127.0.0.1"))
    assert embedded_ipv4(int(V6("::127.0.0.1"))) == int(V4("127.0.0.1"))
    assert embedded_ipv4(int(V6("64:ff9b::127.0.0.1"))) == int(V4("127.0.0.1"))
    assert embedded_ipv4(int(V6("2002:7f00:1:ffff::1"))) == int(V4("127.0.0.1"))
    for native in ("::", "::1", "2606:4700::1111", "64:ff9b:1::1", "2001::1", "::fffe:0:0"):
        assert embedded_ipv4(int(V6(native))) is None, native


def test_tables_are_valid_networks() -> None:
    for table in (DEFAULT_DENY_IPV4, DEFAULT_DENY_IPV6, EMBEDDED_IPV4_PREFIXES):
        for cidr, reason in table:
            ipaddress.ip_network(cidr)
            assert reason


# --- overrides ------------------------------------------------------------------------


def test_allow_loopback_for_tests() -> None:
    policy = PeerPolicy(allow=["127.0.0.0/8", "::1/128"])
    assert policy.permits("127.0.0.1")
    assert policy.permits("::1")
    # Embedded forms are judged as their IPv4 address, allow included.
    for form in _forms("127.0.0.1"):
        assert policy.permits(form), form
    assert not policy.permits("10.0.0.1")
    assert not policy.permits("::ffff:10.0.0.1")
    assert not policy.permits("::")
    assert not policy.permits("0.0.0.0")


def test_deny_beats_allow() -> None:
    policy = PeerPolicy(allow=["127.0.0.0/8"], deny=["127.0.0.2/32"])
    assert policy.permits("127.0.0.1")
    assert not policy.permits("127.0.0.2")
    assert not policy.permits("::ffff:127.0.0.2")
    assert policy.permits("::ffff:127.0.0.1")


def test_deny_public_ranges() -> None:
    policy = PeerPolicy(deny=["8.8.8.0/24", "2606:4700::/32"])
    assert not policy.permits("8.8.8.8")
    assert not policy.permits("::ffff:8.8.8.8")
    assert not policy.permits("2002:808:808::1")
    assert not policy.permits("2606:4700::1111")
    assert policy.permits("8.8.4.4")
    assert policy.permits("2606:4701::1")


def test_ipv6_deny_matches_the_address_as_written() -> None:
    policy = PeerPolicy(deny=["2002::/16", "::ffff:8.8.4.0/120"])
    assert not policy.permits("2002:808:808::1")  # would be judged as 8.8.8.8 otherwise
    assert not policy.permits("::ffff:8.8.4.4")
    assert policy.permits("8.8.4.4")
    assert policy.permits("8.8.8.8")
    assert PeerPolicy(deny=["2000::/3"]).permits("::ffff:8.8.8.8")


def test_ipv6_allow_never_opens_embedded_ipv4() -> None:
    policy = PeerPolicy(allow=["::/0"])
    assert policy.permits("fe80::1")
    assert policy.permits("::1")
    assert policy.permits("fd00::1")
    assert not policy.permits("::ffff:127.0.0.1")
    assert not policy.permits("2002:7f00:1::")
    assert not policy.permits("64:ff9b::a00:1")
    assert policy.permits("::ffff:8.8.8.8")


def test_allow_all_ipv4() -> None:
    policy = PeerPolicy(allow=["0.0.0.0/0"])
    assert policy.permits("127.0.0.1")
    assert policy.permits("::ffff:10.1.2.3")
    assert not policy.permits("::1")
    assert not policy.permits("fe80::1")


def test_allow_teredo_and_nat64_local_use_natively() -> None:
    policy = PeerPolicy(allow=["2001::/32", "64:ff9b:1::/48"])
    assert policy.permits("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert policy.permits("64:ff9b:1::a00:1")


@pytest.mark.parametrize(
    "cidr", ["::ffff:127.0.0.0/104", "2002::/16", "64:ff9b::/96", "::ffff:0:0:0/96", "::2/127"]
)
def test_allow_inside_an_embedding_prefix_is_rejected(cidr: str) -> None:
    with pytest.raises(ValueError, match="IPv4-embedding prefix"):
        PeerPolicy(allow=[cidr])
    PeerPolicy(deny=[cidr])  # deny is fine: it matches the address as written


@pytest.mark.parametrize(
    "bad",
    [
        ["127.0.0.1/8"],  # host bits set
        ["127.0.0.0/33"],
        ["::/129"],
        ["300.0.0.0/8"],
        ["localhost"],
        [""],
        ["10.0.0.0/8", "nope"],
        "10.0.0.0/8",  # a bare string is a sequence of characters
        [b"10.0.0.0/8"],
        [None],
    ],
)
@pytest.mark.parametrize("field", ["allow", "deny"])
def test_invalid_cidr_rejected(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=field):
        PeerPolicy(**{field: bad})  # type: ignore[arg-type]


def test_repr_shows_normalised_rules() -> None:
    policy = PeerPolicy(allow=["127.0.0.0/8"], deny=["2001:DB8::/32"])
    assert repr(policy) == "PeerPolicy(allow=('127.0.0.0/8',), deny=('2001:db8::/32',))"


# --- garbage --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "",
        " ",
        "garbage",
        "8.8.8.8 ",
        " 8.8.8.8",
        "8.8.8.8\x00",
        "8.8.8",
        "8.8.8.8.8",
        "08.8.8.8",
        "0x08.8.8.8",
        "134744072",
        "8.8.8.8/32",
        "8.8.8.8:3478",
        "[2606:4700::1111]",
        "2606:4700::1111%eth0",
        "fe80::1%1",
        "2606:4700:::1111",
        ":::",
        "\ud800",
        "\uff18.\uff18.\uff18.\uff18",  # fullwidth digits
        "::ffff:8.8.8.8.8",
    ],
)
def test_garbage_is_denied(ip: str) -> None:
    assert not DEFAULT.permits(ip)
    assert not PeerPolicy(allow=["0.0.0.0/0", "::/0"]).permits(ip)


@pytest.mark.parametrize("value", [None, 134744072, b"8.8.8.8", bytearray(b"::1"), ["8.8.8.8"]])
def test_non_strings_are_denied(value: object) -> None:
    assert not DEFAULT.permits(value)  # type: ignore[arg-type]


@given(st.text())
def test_permits_never_raises(text: str) -> None:
    assert DEFAULT.permits(text) in (True, False)


# --- reference model ------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF
_COMPAT = ipaddress.ip_network("::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
# Rules the policy applies on top of ``is_global`` (each documented in relay.turn.policy):
_EXTRA_V4 = [
    ipaddress.ip_network("192.0.0.0/24"),  # whole block; is_global exempts 192.0.0.9/.10
    ipaddress.ip_network("192.88.99.0/24"),  # deprecated 6to4 relay anycast (RFC 7526)
]
_EXTRA_V6 = [
    ipaddress.ip_network("2001::/23"),  # whole block; is_global exempts some anycast
    ipaddress.ip_network("3fff::/20"),  # RFC 9637, newer than Python 3.11's table
    ipaddress.ip_network("fec0::/10"),  # deprecated site-local, not in ipaddress's table
    ipaddress.ip_network("64:ff9b:1::/48"),  # NAT64 local use: embedding is site-specific
]


def _normalise(address: V4 | V6) -> V4 | V6 | None:
    """The address judged: embedded IPv4 where there is one, None for Teredo."""
    if isinstance(address, V4):
        return address
    if address.teredo is not None:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _TRANSLATED:
        return V4(int(address) & _MASK32)
    if address in _COMPAT and int(address) > 1:
        return V4(int(address))
    return address


def reference(ip: str, allow: Sequence[Net] = (), deny: Sequence[Net] = ()) -> bool:
    original = ipaddress.ip_address(ip)
    judged = _normalise(original)
    if judged is None:
        return any(original in net for net in allow if net.version == 6) and not any(
            original in net for net in deny if net.version == 6
        )
    if any(judged in net for net in deny if net.version == judged.version):
        return False
    if isinstance(original, V6) and any(original in net for net in deny if net.version == 6):
        return False
    if any(judged in net for net in allow if net.version == judged.version):
        return True
    if not judged.is_global or judged.is_multicast:
        return False
    if isinstance(judged, V4):
        return not any(judged in net for net in _EXTRA_V4)
    return judged in _GLOBAL_UNICAST and not any(judged in net for net in _EXTRA_V6)


def _boundaries() -> list[str]:
    out = []
    for table in (DEFAULT_DENY_IPV4, DEFAULT_DENY_IPV6, EMBEDDED_IPV4_PREFIXES):
        for cidr, _ in table:
            net = ipaddress.ip_network(cidr)
            cls = V4 if net.version == 4 else V6
            top = (1 << net.max_prefixlen) - 1
            for value in (int(net.network_address) - 1, int(net.broadcast_address) + 1):
                if 0 <= value <= top:
                    out.append(str(cls(value)))
            out.extend(_edges(cidr))
    return out


def _embed(v4: V4, kind: int, low: int) -> str:
    n = int(v4)
    value = [
        (0xFFFF << 32) | n,
        (0xFFFF << 48) | n,
        (0x64FF9B << 96) | n,
        (0x2002 << 112) | (n << 80) | (low & ((1 << 80) - 1)),
        n,
    ][kind]
    return str(V6(value))


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.builds(
        _embed,
        st.ip_addresses(v=4),
        st.integers(0, 4),
        st.integers(0, (1 << 80) - 1),
    ),
    st.sampled_from(_boundaries()),
)


def _network(address: V4 | V6, prefix: int) -> Net:
    return ipaddress.ip_network((address, min(prefix, address.max_prefixlen)), strict=False)


networks = st.builds(_network, st.ip_addresses(), st.integers(0, 128))


@settings(max_examples=3000)
@given(addresses)
@example("192.0.0.10")
@example("2001:1::2")
@example("224.0.0.1")
@example("fec0::1")
@example("::ffff:0:7f00:1")
@example("2001:0:4136:e378:8000:63bf:3fff:fdd2")
def test_default_policy_matches_reference(ip: str) -> None:
    assert DEFAULT.permits(ip) == reference(ip), ip


@settings(max_examples=500)
@given(
    st.lists(networks, max_size=3),
    st.lists(networks, max_size=3),
    st.lists(addresses, min_size=1, max_size=20),
)
def test_overrides_match_reference(allow: list[Net], deny: list[Net], ips: list[str]) -> None:
    embedding = [ipaddress.ip_network(cidr) for cidr, _ in EMBEDDED_IPV4_PREFIXES]
    allow = [
        net
        for net in allow
        if not (
            net.version == 6
            and any(net.subnet_of(e) for e in embedding if e.version == 6)
            and int(net.network_address) > 1
        )
    ]
    policy = PeerPolicy(allow=[str(n) for n in allow], deny=[str(n) for n in deny])
    for ip in ips:
        assert policy.permits(ip) == reference(ip, allow, deny), (ip, allow, deny)
