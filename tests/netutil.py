"""Free ports on loopback for tests that start servers."""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_udp_port(host: str = "127.0.0.1", *, also: tuple[str, ...] = ()) -> int:
    """A port free for UDP and TCP on ``host`` (and on every address in ``also``) right
    now: the relay listens on both."""
    for _ in range(100):
        with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        try:
            for other in (host, *also):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    if other == host and kind == socket.SOCK_DGRAM:
                        continue
                    with socket.socket(_family(other), kind) as s:
                        s.bind((other, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
