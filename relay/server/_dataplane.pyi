"""Type stub of the C extension ``relay.server._dataplane`` (see ``_dataplane.c``)."""

import builtins

from relay.server.types import Address

BATCH: int
BUFFER_SIZE: int

def sockaddr(family: int, address: Address) -> bytes: ...
def address(sockaddr: bytes) -> Address: ...

class Route:
    """One installed forwarding decision."""

    fd: int
    channel: int
    expiry: float
    packets: int
    bytes: int
    @property
    def destination(self) -> builtins.bytes: ...
    def __init__(
        self, fd: int, destination: builtins.bytes, channel: int, expiry: float
    ) -> None: ...

class DataPlane:
    inbound: list[dict[bytes, Route]]
    outbound: dict[bytes, Route]
    to_peer_packets: int
    to_peer_bytes: int
    to_client_packets: int
    to_client_bytes: int
    truncated: int
    send_failures: int
    @property
    def epoll_fd(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def __init__(self, listeners: list[tuple[int, int]]) -> None: ...
    def drain_listener(self, index: int, now: float) -> list[tuple[bytes, Address]] | None: ...
    def queue(self, index: int, payload: bytes, address: Address) -> bool: ...
    def flush(self, index: int = ...) -> None: ...
    def add_relay(self, fd: int) -> None: ...
    def remove_relay(self, fd: int) -> None: ...
    def drain_relays(self, now: float) -> list[tuple[int, bytes, Address]] | None: ...
    def close(self) -> None: ...
