"""Forwarding routes: the TURN core's channel decisions, installed in the C data plane.

ChannelData is the bulk of a TURN relay's traffic, and each datagram needs only a lookup:
which relayed socket and peer a client's channel goes to, and back. The core decides
(``relay.turn.server``: ChannelBind, CreatePermission, refreshes, expiry) and, through the
``Routes`` hook of ``AllocationManager``, this table mirrors each live channel of a UDP
client as two ``relay.server._dataplane.Route`` objects:

* inbound, in the client's listener's dict: channel number (2 bytes) + client sockaddr
  -> relayed socket fd, peer sockaddr;
* outbound: relayed socket fd (4 bytes, native) + peer sockaddr -> listener index,
  client sockaddr, channel number;

both with expiry = the earlier of the channel's and the permission's. The data plane
relays a datagram only on a live route; anything else (an expired channel or permission,
no channel, STUN) goes to the core, which applies RFC 8656 as before. Routes are rebuilt
for an allocation whenever its channels or permissions change (``sync``), dropped with it
(``forget``), and the traffic they carried is added to the allocation's counters
(``fold``). With ``--max-bps`` no routes are installed: the core meters every datagram.
"""

from __future__ import annotations

import socket
import sys

from relay.server.batched import DataPlane, Route, sockaddr
from relay.turn.allocation import Allocation

# (inbound key, inbound route, outbound key, outbound route) per channel
_Installed = tuple[bytes, Route, bytes, Route]


def _family(address: tuple[object, ...]) -> socket.AddressFamily:
    return socket.AF_INET6 if len(address) == 4 else socket.AF_INET


class RouteTable:
    """The ``Routes`` of one relay process, kept in its ``DataPlane``."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self._installed: dict[Allocation, tuple[int, list[_Installed]]] = {}

    def __len__(self) -> int:
        """Channels with routes installed."""
        return sum(len(entries) for _, entries in self._installed.values())

    def sync(self, allocation: Allocation) -> None:
        """(Re)install the routes of ``allocation``'s channels, as they are now."""
        self.forget(allocation)
        client = allocation.client
        if not allocation.alive or not isinstance(client, int) or not allocation.channels:
            return  # TCP/TLS clients: the core handles their ChannelData framing
        inbound = self._dataplane.inbound[client]
        outbound = self._dataplane.outbound
        client_name = sockaddr(_family(allocation.client_addr), allocation.client_addr)
        entries: list[_Installed] = []
        for channel in allocation.channels.values():
            expiry = min(channel.expiry, allocation.permissions.get(channel.peer[0], 0.0))
            relay_fd = channel.relay.fileno()
            peer_name = sockaddr(channel.relay.family, channel.peer)
            key_in = channel.number.to_bytes(2, "big") + client_name
            key_out = relay_fd.to_bytes(4, sys.byteorder) + peer_name
            route_in = Route(relay_fd, peer_name, channel.number, expiry)
            route_out = Route(client, client_name, channel.number, expiry)
            inbound[key_in] = route_in
            outbound[key_out] = route_out
            entries.append((key_in, route_in, key_out, route_out))
        self._installed[allocation] = (client, entries)

    def forget(self, allocation: Allocation) -> None:
        """Remove ``allocation``'s routes (adding their traffic to its counters)."""
        installed = self._installed.pop(allocation, None)
        if installed is None:
            return
        client, entries = installed
        self._fold(allocation, entries)
        inbound = self._dataplane.inbound[client]
        outbound = self._dataplane.outbound
        for key_in, route_in, key_out, route_out in entries:
            if inbound.get(key_in) is route_in:
                del inbound[key_in]
            if outbound.get(key_out) is route_out:
                del outbound[key_out]

    def fold(self, allocation: Allocation) -> None:
        """Add what ``allocation``'s routes relayed to its counters."""
        installed = self._installed.get(allocation)
        if installed is not None:
            self._fold(allocation, installed[1])

    @staticmethod
    def _fold(allocation: Allocation, entries: list[_Installed]) -> None:
        for _, route_in, _, route_out in entries:
            allocation.packets_to_peer += route_in.packets
            allocation.bytes_to_peer += route_in.bytes
            allocation.packets_to_client += route_out.packets
            allocation.bytes_to_client += route_out.bytes
            route_in.packets = route_in.bytes = 0
            route_out.packets = route_out.bytes = 0
