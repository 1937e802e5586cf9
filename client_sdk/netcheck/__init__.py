"""NAT behaviour discovery: ``netcheck()`` -> ``NatReport`` (``natkit netcheck``).

Public IPv4/IPv6 address, RFC 4787 mapping and filtering behaviour (RFC 5780 tests against
a server with an alternate address, or mapped addresses compared across servers), port
preservation, hairpinning, UDP reachability, relay latency, and optionally the idle
mapping lifetime. Layout: ``stun`` (the codec, over aioice), ``transport`` (sockets and
transactions), ``classify`` (pure: observations -> behaviour), ``probe`` (the tests),
``relays``, ``lifetime``, ``report`` (the report and its JSON).
"""

from client_sdk.netcheck.probe import netcheck
from client_sdk.netcheck.report import (
    FilteringBehavior,
    LifetimeMethod,
    MappingBehavior,
    MappingLifetime,
    MappingTest,
    NatReport,
    NetcheckError,
    RelayLatency,
    StunServerResult,
    format_table,
)
from client_sdk.netcheck.runner import Timing

__all__ = [
    "FilteringBehavior",
    "LifetimeMethod",
    "MappingBehavior",
    "MappingLifetime",
    "MappingTest",
    "NatReport",
    "NetcheckError",
    "RelayLatency",
    "StunServerResult",
    "Timing",
    "format_table",
    "netcheck",
]
