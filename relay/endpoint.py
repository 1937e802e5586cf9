"""Transport addresses as operators write them: ``HOST:PORT`` and ``[V6]:PORT``."""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple


class Endpoint(NamedTuple):
    """A numeric IP address and a port."""

    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def is_wildcard(self) -> bool:
        return ipaddress.ip_address(self.host).is_unspecified

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, default_port: int | None = None) -> Endpoint:
        """Parse ``1.2.3.4:3478``, ``[::1]:3478`` (or a bare address with ``default_port``).

        Raises ``ValueError`` naming what is wrong.
        """
        text = text.strip()
        host: str
        port_text: str | None
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: missing ']' after IPv6 address")
            host, rest = text[1:end], text[end + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:] if rest else None
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not a numeric IPv4 or IPv6 address") from None
        if port_text is None:
            if default_port is None:
                raise ValueError(f"{text!r}: missing ':PORT'")
            port = default_port
        else:
            if not port_text.isdigit():
                raise ValueError(f"{text!r}: port {port_text!r} is not a number")
            port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(f"{text!r}: port {port} is out of range 0-65535")
        return cls(str(ip), port)
