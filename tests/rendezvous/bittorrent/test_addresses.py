"""``packed_ip`` against the standard library's ``ipaddress`` on any text."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from rendezvous.bittorrent.addresses import packed_ip, unpacked_ip


def reference(text: str) -> bytes | None:
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.packed
    return address.packed


@given(st.ip_addresses().map(str))
def test_addresses(text: str) -> None:
    assert packed_ip(text) == reference(text)
    packed = packed_ip(text)
    assert packed is not None
    assert ipaddress.ip_address(unpacked_ip(packed)).packed == packed


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_and_zoned(address: ipaddress.IPv4Address) -> None:
    assert packed_ip(f"::ffff:{address}") == address.packed
    assert packed_ip("fe80::1%eth0") == ipaddress.ip_address("fe80::1").packed


@given(st.text(alphabet="0123456789abcdef.:%x\x00 ", max_size=45))
def test_any_text(text: str) -> None:
    assert packed_ip(text) == reference(text)
