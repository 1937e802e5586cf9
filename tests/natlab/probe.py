"""Probing a lab NAT from outside with plain UDP sockets (no natkit code): what public
address a private socket gets towards each of four public endpoints, and which of them
can reach it -- RFC 4787's definitions, observed directly."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tests.natlab.lab import Lab
from tests.natlab.nat import Behaviour

Address = tuple[str, int]
PORTS = (4001, 4002)
QUIET = 0.4  # seconds of silence that mean "did not arrive"


@dataclass
class Probes:
    """Sockets on the public segment: ``endpoints[(i, j)]`` at server address ``i``, port
    ``PORTS[j]``."""

    lab: Lab
    endpoints: dict[tuple[int, int], socket.socket]

    @classmethod
    def open(cls, lab: Lab) -> Probes:
        endpoints = {}
        for i in (0, 1):
            for j in (0, 1):
                sock = lab.public.socket()
                sock.bind((lab.server_ip(i), PORTS[j]))
                endpoints[(i, j)] = sock
        return cls(lab, endpoints)

    def close(self) -> None:
        for sock in self.endpoints.values():
            sock.close()

    def address(self, endpoint: tuple[int, int]) -> Address:
        return self.lab.server_ip(endpoint[0]), PORTS[endpoint[1]]

    def mapped(self, private: socket.socket, endpoint: tuple[int, int]) -> Address | None:
        """The source address ``endpoint`` sees a datagram from ``private`` come from
        (None: nothing came)."""
        server = self.endpoints[endpoint]
        _drain(server)
        token = f"probe {id(private)} {endpoint}".encode()
        for _ in range(3):  # loss is a lab behaviour too
            private.sendto(token, self.address(endpoint))
            got = _receive(server, token)
            if got is not None:
                return got
        return None

    def reaches(self, endpoint: tuple[int, int], public: Address, private: socket.socket) -> bool:
        """Whether a datagram from ``endpoint`` to ``public`` arrives at ``private``."""
        _drain(private)
        token = f"inbound {endpoint}".encode()
        self.endpoints[endpoint].sendto(token, public)
        return _receive(private, token) is not None


def _receive(sock: socket.socket, token: bytes) -> Address | None:
    sock.settimeout(QUIET)
    try:
        while True:
            data, source = sock.recvfrom(2048)
            if data == token:
                return source[0], source[1]
    except TimeoutError:
        return None


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recvfrom(2048)
    except BlockingIOError:
        pass


def private_socket(lab: Lab, host: str) -> socket.socket:
    """A UDP socket on ``host``, bound to an ephemeral port."""
    sock = lab.host(host).ns.socket()
    sock.bind(("0.0.0.0", 0))
    return sock


def mapping_of(probes: Probes, private: socket.socket) -> Behaviour | None:
    """RFC 4787 §4.1 observed: the public address towards (server 0, port 0), (server 1,
    port 0) and (server 1, port 1). None: nothing got out."""
    first = probes.mapped(private, (0, 0))
    other_address = probes.mapped(private, (1, 0))
    other_port = probes.mapped(private, (1, 1))
    if first is None or other_address is None or other_port is None:
        return None
    if first == other_address == other_port:
        return "endpoint-independent"
    if other_address == other_port:
        return "address-dependent"
    return "address-and-port-dependent"


def filtering_of(probes: Probes, private: socket.socket) -> Behaviour | None:
    """RFC 4787 §5 observed: after ``private`` sent to (server 0, port 0), whether the
    other address, or only the other port of the same address, gets through."""
    public = probes.mapped(private, (0, 0))
    if public is None:
        return None
    if not probes.reaches((0, 0), public, private):
        return None  # not even the answer comes back: no working mapping
    if probes.reaches((1, 1), public, private):
        return "endpoint-independent"
    if probes.reaches((0, 1), public, private):
        return "address-dependent"
    return "address-and-port-dependent"
