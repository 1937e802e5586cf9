"""Types the protocol cores and their shims share."""

from __future__ import annotations

from typing import Protocol

# A peer or client transport address as sockets give it: (ip, port) for IPv4 and
# (ip, port, flowinfo, scope_id) for IPv6.
Address = tuple[str, int] | tuple[str, int, int, int]


class Sink(Protocol):
    """Something a reply can be sent through: a relayed socket or a client connection."""

    def send(self, data: bytes, addr: Address) -> object: ...


# One datagram to send: (payload, where from, destination). "Where from" is a listener
# index (an int: the listening UDP socket) or a Sink.
Reply = tuple[bytes, "int | Sink", Address]
# A reply that leaves from a listening socket (what the Binding core produces).
ListenerReply = tuple[bytes, int, Address]


class Connection(Sink, Protocol):
    """A client's TCP or TLS connection. ``listener_index``: the UDP listener whose STUN
    identity (RESPONSE-ORIGIN, SOFTWARE, ...) Binding responses on it share."""

    listener_index: int


# The transport a client's messages arrive on: a listener index (UDP) or a connection
# (TCP/TLS). With the client's address it is the allocation's 5-tuple key.
Transport = int | Connection
