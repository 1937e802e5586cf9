"""Free ports on loopback for tests that start servers."""

from __future__ import annotations

import socket


def free_udp_port(host: str = "127.0.0.1", *, also: tuple[str, ...] = ()) -> int:
    """A UDP port free on ``host`` (and on every address in ``also``) right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        try:
            for other in also:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((other, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free UDP port")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
