"""What ``netcheck`` reports: typed, frozen, and the same as stable JSON.

The JSON (``NatReport.to_json``, ``natkit netcheck --json``) is version 1 of a documented
format: keys are only ever added, never renamed or retyped, and ``version`` changes if
that promise ever has to be broken. Every key is always present (``null`` when unknown).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

JSON_VERSION = 1

E = TypeVar("E", bound=enum.StrEnum)


class NetcheckError(Exception):
    """netcheck could not run: a bad argument (a STUN server that does not parse or
    resolve, a bad rendezvous URL) or a report that does not parse. Network silence is
    never an error: it is what the report describes."""


class MappingBehavior(enum.StrEnum):
    """RFC 4787 §4.1 mapping behaviour, as RFC 5780 §4.3 measures it."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class FilteringBehavior(enum.StrEnum):
    """RFC 4787 §5 filtering behaviour, as RFC 5780 §4.4 measures it."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class MappingTest(enum.StrEnum):
    """How the mapping behaviour was found."""

    RFC5780 = "rfc5780"  # tests I-III against a server with OTHER-ADDRESS
    TWO_SERVERS = "two-servers"  # mapped addresses from two or more servers compared
    NO_NAT = "no-nat"  # the mapped address is the socket's own (RFC 5780 §4.3 test I)


class LifetimeMethod(enum.StrEnum):
    """How the idle mapping lifetime was probed (see ``client_sdk.netcheck.lifetime``)."""

    RESPONSE_PORT = "response-port"  # RFC 5780 §4.6
    REQUERY = "requery"  # the same socket asks again; the mapped address changed or not


@dataclass(frozen=True, slots=True)
class StunServerResult:
    """One ``--stun`` server, as seen from the mapping test's socket (test I)."""

    server: str  # as given
    address: str | None  # what it resolved to, "ip:port" or "[ip6]:port"
    rtt_ms: float | None  # None: no answer
    mapped_address: str | None
    other_address: str | None  # RFC 5780 OTHER-ADDRESS: the server can run the tests


@dataclass(frozen=True, slots=True)
class RelayLatency:
    """One relay URI the rendezvous offered and the STUN round trip to its host:port
    (median of 3; None: no answer, or a TLS-only ``turns:``/``stuns:`` URI)."""

    uri: str
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class MappingLifetime:
    """How long an idle UDP mapping survived: still there after ``at_least_s`` seconds of
    idleness, gone after ``at_most_s`` (None: still there at the longest idle time
    tried). An estimate; NATs shorten it under load (RFC 5780 §4.6)."""

    method: LifetimeMethod
    at_least_s: float
    at_most_s: float | None


@dataclass(frozen=True, slots=True)
class NatReport:
    """The result of ``client_sdk.netcheck()``. ``None`` fields are unknown: not tested
    (no UDP, no RFC 5780 server) or inconclusive (a test's server did not answer)."""

    udp: bool
    public_ipv4: str | None = None
    public_ipv6: str | None = None
    mapped_address: str | None = None  # test I's XOR-MAPPED-ADDRESS, "ip:port"
    behind_nat: bool | None = None
    mapping: MappingBehavior | None = None
    mapping_test: MappingTest | None = None
    mapping_varies_by_destination: bool | None = None
    filtering: FilteringBehavior | None = None
    port_preserving: bool | None = None
    hairpinning: bool | None = None
    stun: tuple[StunServerResult, ...] = ()
    relays: tuple[RelayLatency, ...] = ()
    preferred_relay: str | None = None
    relays_error: str | None = None
    mapping_lifetime: MappingLifetime | None = None
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in their documented order."""
        lifetime = self.mapping_lifetime
        return {
            "version": JSON_VERSION,
            "udp": self.udp,
            "public_ipv4": self.public_ipv4,
            "public_ipv6": self.public_ipv6,
            "mapped_address": self.mapped_address,
            "behind_nat": self.behind_nat,
            "mapping": _value(self.mapping),
            "mapping_test": _value(self.mapping_test),
            "mapping_varies_by_destination": self.mapping_varies_by_destination,
            "filtering": _value(self.filtering),
            "port_preserving": self.port_preserving,
            "hairpinning": self.hairpinning,
            "stun": [
                {
                    "server": s.server,
                    "address": s.address,
                    "rtt_ms": s.rtt_ms,
                    "mapped_address": s.mapped_address,
                    "other_address": s.other_address,
                }
                for s in self.stun
            ],
            "relays": [{"uri": r.uri, "latency_ms": r.latency_ms} for r in self.relays],
            "preferred_relay": self.preferred_relay,
            "relays_error": self.relays_error,
            "mapping_lifetime": None
            if lifetime is None
            else {
                "method": lifetime.method.value,
                "at_least_s": lifetime.at_least_s,
                "at_most_s": lifetime.at_most_s,
            },
            "elapsed_ms": self.elapsed_ms,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> NatReport:
        """The report ``to_json`` wrote (a string or the decoded object); NetcheckError
        when it is not one. Keys a later version added are ignored."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise NetcheckError(f"a netcheck report is JSON: {exc}") from exc
        if not isinstance(data, Mapping):
            raise NetcheckError("a netcheck report is a JSON object")
        reader = _Reader(data, "report")
        version = reader.get("version", int)
        if version != JSON_VERSION:
            raise NetcheckError(f"report version {version} is not {JSON_VERSION}")
        lifetime = reader.optional("mapping_lifetime", Mapping)
        return cls(
            udp=reader.get("udp", bool),
            public_ipv4=reader.optional("public_ipv4", str),
            public_ipv6=reader.optional("public_ipv6", str),
            mapped_address=reader.optional("mapped_address", str),
            behind_nat=reader.optional("behind_nat", bool),
            mapping=reader.enum("mapping", MappingBehavior),
            mapping_test=reader.enum("mapping_test", MappingTest),
            mapping_varies_by_destination=reader.optional("mapping_varies_by_destination", bool),
            filtering=reader.enum("filtering", FilteringBehavior),
            port_preserving=reader.optional("port_preserving", bool),
            hairpinning=reader.optional("hairpinning", bool),
            stun=tuple(
                StunServerResult(
                    server=r.get("server", str),
                    address=r.optional("address", str),
                    rtt_ms=r.number("rtt_ms"),
                    mapped_address=r.optional("mapped_address", str),
                    other_address=r.optional("other_address", str),
                )
                for r in reader.objects("stun")
            ),
            relays=tuple(
                RelayLatency(uri=r.get("uri", str), latency_ms=r.number("latency_ms"))
                for r in reader.objects("relays")
            ),
            preferred_relay=reader.optional("preferred_relay", str),
            relays_error=reader.optional("relays_error", str),
            mapping_lifetime=None
            if lifetime is None
            else _lifetime(_Reader(lifetime, "mapping_lifetime")),
            elapsed_ms=reader.number("elapsed_ms") or 0.0,
        )


def _value(member: enum.StrEnum | None) -> str | None:
    return None if member is None else member.value


def _lifetime(reader: _Reader) -> MappingLifetime:
    at_least = reader.number("at_least_s")
    if at_least is None:
        raise NetcheckError("mapping_lifetime.at_least_s: a number")
    method = reader.enum("method", LifetimeMethod)
    if method is None:
        raise NetcheckError("mapping_lifetime.method: missing")
    return MappingLifetime(method, at_least, reader.number("at_most_s"))


class _Reader:
    """Typed access to one JSON object, with the key's path in every complaint."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def _raw(self, key: str) -> Any:
        if key not in self.data:
            raise NetcheckError(f"{self.where}: missing key {key!r}")
        return self.data[key]

    def get(self, key: str, kind: type) -> Any:
        value = self._raw(key)
        # bool is an int in Python, and must not pass for one here (nor an int for a bool).
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise NetcheckError(f"{self.where}.{key}: expected {kind.__name__}, got {value!r}")
        return value

    def optional(self, key: str, kind: type) -> Any:
        return None if self._raw(key) is None else self.get(key, kind)

    def number(self, key: str) -> float | None:
        value = self._raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise NetcheckError(f"{self.where}.{key}: expected a number, got {value!r}")
        return float(value)

    def enum(self, key: str, kind: type[E]) -> E | None:
        value = self.optional(key, str)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in kind)
            raise NetcheckError(f"{self.where}.{key}: {value!r} is not one of {allowed}") from None

    def objects(self, key: str) -> list[_Reader]:
        items = self.get(key, list)
        readers = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise NetcheckError(f"{self.where}.{key}[{i}]: expected an object")
            readers.append(_Reader(item, f"{self.where}.{key}[{i}]"))
        return readers


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _ms(value: float | None) -> str:
    return "no answer" if value is None else f"{value:.1f} ms"


def format_table(report: NatReport) -> str:
    """The human-readable summary ``natkit netcheck`` prints."""
    rows: list[tuple[str, str]] = [("UDP", "yes" if report.udp else "blocked (no STUN answer)")]
    if report.udp:
        mapped = f" (mapped {report.mapped_address})" if report.mapped_address else ""
        rows.append(("Public IPv4", (report.public_ipv4 or "none") + mapped))
        rows.append(("Public IPv6", report.public_ipv6 or "none"))
        rows.append(("Behind NAT", _yes_no(report.behind_nat)))
        mapping = report.mapping.value if report.mapping else "unknown"
        if report.mapping_test is not None:
            mapping += f" ({report.mapping_test.value})"
        rows.append(("Mapping", mapping))
        if report.mapping_varies_by_destination is not None:
            rows.append(("Varies by dest.", _yes_no(report.mapping_varies_by_destination)))
        filtering = report.filtering.value if report.filtering else "unknown"
        rows.append(("Filtering", filtering))
        rows.append(("Port preserving", _yes_no(report.port_preserving)))
        rows.append(("Hairpinning", _yes_no(report.hairpinning)))
    for server in report.stun:
        detail = _ms(server.rtt_ms)
        if server.other_address:
            detail += f", RFC 5780 (other address {server.other_address})"
        rows.append((f"STUN {server.server}", detail))
    for relay in report.relays:
        mark = "  preferred" if relay.uri == report.preferred_relay else ""
        rows.append((f"Relay {relay.uri}", _ms(relay.latency_ms) + mark))
    if report.relays_error:
        rows.append(("Relays", f"error: {report.relays_error}"))
    lifetime = report.mapping_lifetime
    if lifetime is not None:
        if lifetime.at_most_s is None:
            text = f"over {lifetime.at_least_s:g} s (still open at the longest idle tried)"
        else:
            text = f"{lifetime.at_least_s:g}-{lifetime.at_most_s:g} s idle"
        rows.append(("Mapping lifetime", f"{text} ({lifetime.method.value})"))
    rows.append(("Took", f"{report.elapsed_ms / 1000:.2f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
