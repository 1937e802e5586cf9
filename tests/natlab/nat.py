"""NAT behaviours (RFC 4787 terms) and the netfilter rules that give a router each one.

A ``Nat`` says what a router does; ``ruleset`` turns it into one nftables table (plus,
for the one behaviour nftables cannot express, an iptables rule: ``iptables_rules``).
The kernel's own connection tracking does the translating -- these are real NATs.

* mapping: ``"endpoint-independent"`` keeps one public port per private socket whatever
  the destination (Linux's masquerade, which also keeps the private port when it is free:
  ``port_preserving``; with ``port_preserving=False`` the public port is the private one
  shifted by a fixed offset, still one per socket); ``"address-and-port-dependent"`` takes
  a new random public port for every destination (masquerade ``fully-random``: the
  "symmetric" NAT).
* filtering: what may come in through a mapping -- ``"address-and-port-dependent"`` only
  the exact address and port it was opened to (conntrack's own rule, the Linux default);
  ``"address-dependent"`` any port of an address the host has sent to;
  ``"endpoint-independent"`` anyone. The last two keep a map of public port -> host (from
  the packets going out) and forward new inbound packets by it; they need the public port
  to be the private one (``port_preserving``, endpoint-independent mapping).
* ``hairpin``: a host reaching another host's public address through the router (the
  same port -> host map, on the LAN side, with the source rewritten to the router's).
* ``udp=False``: every UDP packet through the router is dropped.
* ``loss``: that fraction of forwarded packets dropped at random.
* ``udp_timeout``: seconds an idle UDP mapping lives (conntrack's UDP timeouts, and the
  learnt maps'); None: the kernel's (30 s unanswered, 120 s for a flow with replies).

Every router drops unsolicited traffic to its own address, as home routers do: else a
probe to its closed port leaves a conntrack entry that collides with a later mapping
(../shared/NATLAB.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Behaviour = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent"]
BEHAVIOURS: tuple[Behaviour, ...] = (
    "endpoint-independent",
    "address-dependent",
    "address-and-port-dependent",
)
TABLE = "natlab"
MAPPING_TIMEOUT = 120  # seconds a learnt port -> host entry lives without traffic
# port_preserving=False: a private port p maps to 20000 + (p - 49152) mod 16384, one to
# one over the dynamic ports 49152-65535 (where netcheck binds its sockets).
SHIFTED_PORTS = (20000, 36383)
SHIFT_BASE = 49152


@dataclass(frozen=True)
class Nat:
    """What one router does (see the module docstring). ``behind``: the name of the
    router whose LAN this one's WAN is on (a home NAT behind a carrier-grade NAT); None:
    on the public segment."""

    mapping: Behaviour = "endpoint-independent"
    filtering: Behaviour = "address-and-port-dependent"
    port_preserving: bool = True
    hairpin: bool = False
    udp: bool = True
    loss: float = 0.0
    udp_timeout: int | None = None
    behind: str | None = None

    def __post_init__(self) -> None:
        if self.mapping not in ("endpoint-independent", "address-and-port-dependent"):
            raise ValueError(f"no rules for {self.mapping} mapping (Linux has none)")
        if self.filtering not in BEHAVIOURS:
            raise ValueError(f"unknown filtering {self.filtering!r}")
        if self.learns_hosts and not self.preserves_ports:
            raise ValueError(
                "endpoint-independent or address-dependent filtering and hairpinning need a "
                "port-preserving endpoint-independent mapping (the rules find the host by "
                "its public port)"
            )
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss is a fraction in [0, 1), not {self.loss}")
        if self.udp_timeout is not None and self.udp_timeout < 1:
            raise ValueError(f"udp_timeout is at least 1 s, not {self.udp_timeout}")

    @property
    def learns_hosts(self) -> bool:
        """Whether the rules keep the public port -> host map (for what comes in)."""
        return self.filtering != "address-and-port-dependent" or self.hairpin

    @property
    def preserves_ports(self) -> bool:
        """Whether the public port is the private one (when it is free)."""
        return self.port_preserving and self.mapping == "endpoint-independent"


def ruleset(nat: Nat, wan_ip: str, lan_subnet: str) -> str:
    """The nftables table (``nft -f`` input) for a router whose WAN address is ``wan_ip``
    and LAN ``lan_subnet``, its interfaces named ``wan`` and ``lan``."""
    prerouting: list[str] = []
    if nat.filtering == "endpoint-independent":
        prerouting.append(
            'iifname "wan" udp dport @owner ct state new dnat ip to udp dport map @owner'
        )
    elif nat.filtering == "address-dependent":
        prerouting.append(
            'iifname "wan" ip saddr . udp dport @contacted ct state new '
            "dnat ip to udp dport map @owner"
        )
    if nat.hairpin:
        prerouting.append(
            f'iifname "lan" ip daddr {wan_ip} udp dport @owner dnat ip to udp dport map @owner'
        )
    postrouting: list[str] = []
    if nat.mapping == "address-and-port-dependent":
        postrouting.append('oifname "wan" masquerade fully-random')
    elif nat.port_preserving:
        postrouting.append('oifname "wan" masquerade')
    # (not port-preserving: the iptables rule of iptables_rules does the mapping)
    if nat.hairpin:  # the hairpinned packet leaves as if from the router's public side
        # (by source address: postrouting knows no input interface)
        postrouting.append(
            f'ip saddr {lan_subnet} oifname "lan" ct status dnat snat ip to {wan_ip}'
        )
    forward: list[str] = []
    if not nat.udp:
        forward.append("meta l4proto udp drop")
    if nat.loss > 0:
        forward.append(f"numgen random mod 10000 < {round(nat.loss * 10000)} drop")
    if nat.learns_hosts:
        forward.append(
            'iifname "lan" oifname "wan" meta l4proto udp update @owner { udp sport : ip saddr }'
        )
    if nat.filtering == "address-dependent":
        forward.append(
            'iifname "lan" oifname "wan" meta l4proto udp '
            "update @contacted { ip daddr . udp sport }"
        )
    lifetime = MAPPING_TIMEOUT if nat.udp_timeout is None else nat.udp_timeout
    sets = [
        f"map owner {{ type inet_service : ipv4_addr; flags timeout; timeout {lifetime}s; }}",
        f"set contacted {{ type ipv4_addr . inet_service; flags timeout; timeout {lifetime}s; }}",
    ]
    return "\n".join(
        [
            f"table ip {TABLE} {{",
            *(f"  {line}" for line in sets),
            _chain("prerouting", "type nat hook prerouting priority dstnat", prerouting),
            _chain("postrouting", "type nat hook postrouting priority srcnat", postrouting),
            _chain("forward", "type filter hook forward priority filter", forward),
            _chain(
                "input",
                "type filter hook input priority filter",
                ['iifname "wan" ct state != { established, related } drop'],
            ),
            "}",
        ]
    )


def _chain(name: str, hook: str, rules: list[str]) -> str:
    body = "".join(f"    {rule}\n" for rule in rules)
    return f"  chain {name} {{\n    {hook}; policy accept;\n{body}  }}"


def sysctls(nat: Nat) -> list[str]:
    """``sysctl -w`` settings of the router's namespace (after its rules are loaded)."""
    if nat.udp_timeout is None:
        return []
    return [
        f"net.netfilter.nf_conntrack_udp_timeout={nat.udp_timeout}",
        f"net.netfilter.nf_conntrack_udp_timeout_stream={nat.udp_timeout}",
    ]


def iptables_rules(nat: Nat, wan_ip: str) -> list[list[str]]:
    """The iptables commands nftables cannot say: a fixed shift of every private port
    (port_preserving=False with endpoint-independent mapping; the kernel's
    NF_NAT_RANGE_PROTO_OFFSET, iptables' ``port-port/base``)."""
    if nat.mapping != "endpoint-independent" or nat.port_preserving:
        return []
    low, high = SHIFTED_PORTS
    target = f"{wan_ip}:{low}-{high}/{SHIFT_BASE}"
    return [
        ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-p", "udp", "-j", "SNAT",
         "--to-source", target],
        ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"],
    ]  # fmt: skip
