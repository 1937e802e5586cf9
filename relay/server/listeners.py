"""Which UDP sockets the relay binds, and how RFC 5780 maps one to another.

With a primary address ``A1:P1`` and an alternate ``A2:P2`` (RFC 5780 §4.1), the server
listens on the four combinations ``{A1, A2} x {P1, P2}``. For a request received on
``Ax:Py`` the OTHER-ADDRESS is ``A(not x):P(not y)`` and CHANGE-REQUEST selects the socket a
response leaves from (RFC 5780 §7.2, §7.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.endpoint import Endpoint
from relay.settings import RelaySettings


@dataclass(frozen=True, slots=True)
class Listener:
    """One bound UDP socket of the relay.

    ``change`` gives, for a CHANGE-REQUEST with (change_ip, change_port) encoded as
    ``change_ip << 1 | change_port``, the index of the listener the response is sent from;
    ``None`` when this address has no RFC 5780 alternate.
    """

    index: int
    address: Endpoint
    other: Endpoint | None = None
    change: tuple[int, int, int, int] | None = None


def plan_listeners(settings: RelaySettings) -> tuple[Listener, ...]:
    """The listeners ``settings`` asks for, each address once, in a stable order."""
    addresses: list[Endpoint] = []
    groups: list[tuple[Endpoint, Endpoint]] = []

    def add(address: Endpoint) -> None:
        if address not in addresses:
            addresses.append(address)

    for address in settings.listen:
        add(address)
    for alt in settings.alt_listen:
        primary = settings.primary_for(alt)
        if primary is None:  # rejected by the settings validator already
            raise ValueError(f"--alt-listen {alt} has no primary address")
        groups.append((primary, alt))
        for ip in (primary.host, alt.host):
            for port in (primary.port, alt.port):
                add(Endpoint(ip, port))

    index = {address: i for i, address in enumerate(addresses)}
    others: dict[Endpoint, tuple[Endpoint, tuple[int, int, int, int]]] = {}
    for primary, alt in groups:
        ips, ports = (primary.host, alt.host), (primary.port, alt.port)
        for xi, ip in enumerate(ips):
            for yi, port in enumerate(ports):
                other_ip, other_port = ips[1 - xi], ports[1 - yi]
                change = (
                    index[Endpoint(ip, port)],
                    index[Endpoint(ip, other_port)],
                    index[Endpoint(other_ip, port)],
                    index[Endpoint(other_ip, other_port)],
                )
                others[Endpoint(ip, port)] = (Endpoint(other_ip, other_port), change)
    result = []
    for i, address in enumerate(addresses):
        other = others.get(address)
        result.append(Listener(i, address, other[0], other[1]) if other else Listener(i, address))
    return tuple(result)
