"""One relay process: its listening sockets, the Binding and TURN cores, the relayed
sockets and the timer that expires allocations. Used in-process (``--workers 1``) and by
each worker process."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.endpoint import Endpoint
from relay.server.binding import BindingService
from relay.server.counters import StunCounters
from relay.server.listeners import Listener
from relay.server.stream import StreamConnection
from relay.server.udp import Listening, open_listeners
from relay.settings import RelaySettings
from relay.turn.allocation import AllocationManager
from relay.turn.auth import LongTermAuthenticator
from relay.turn.counters import TurnCounters
from relay.turn.policy import PeerPolicy
from relay.turn.routes import RouteTable
from relay.turn.server import TurnConfig, TurnServer
from relay.turn.sockets import UdpRelayPorts

log = logging.getLogger(__name__)

TIMER_INTERVAL = 1.0


@dataclass(slots=True)
class RelayCounters:
    """Everything one relay process counts; summed across workers with ``merge``."""

    stun: StunCounters = field(default_factory=StunCounters)
    turn: TurnCounters = field(default_factory=TurnCounters)

    def merge(self, other: RelayCounters) -> None:
        self.stun.merge(other.stun)
        self.turn.merge(other.turn)


class RelayRuntime:
    """Serves ``listeners`` on the running event loop until ``stop()``."""

    def __init__(
        self,
        settings: RelaySettings,
        listeners: Sequence[Listener],
        *,
        nonce_secret: bytes,
        reuse_port: bool,
        bound: Sequence[socket.socket] | None = None,
    ) -> None:
        """``bound``: the listening UDP sockets, one per listener, when the supervisor
        made them (``relay.workers``); otherwise they are bound here."""
        self.settings = settings
        self.listeners = tuple(listeners)
        self.counters = RelayCounters()
        self._nonce_secret = nonce_secret
        self._reuse_port = reuse_port
        self._bound = bound
        self._listening: Listening | None = None
        self._timer: asyncio.Task[None] | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: set[StreamConnection] = set()
        self.turn: TurnServer | None = None
        self._ports: UdpRelayPorts | None = None

    async def start(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        binding = BindingService(
            self.listeners,
            software=settings.software,
            rfc3489=settings.rfc3489,
            counters=self.counters.stun,
        )
        relay_ips = {socket.AddressFamily(f): ips for f, ips in settings.relay_ips().items()}
        ports = self._ports = UdpRelayPorts(
            loop,
            relay_ips,
            min_port=settings.min_port,
            max_port=settings.max_port,
            time=loop.time,
        )
        self.turn = TurnServer(
            binding,
            authenticator=LongTermAuthenticator(
                realm=settings.realm,
                users=settings.users(),
                secrets=settings.auth_secret,
                nonce_secret=self._nonce_secret,
            ),
            policy=PeerPolicy(allow=settings.allow_peer, deny=settings.deny_peer),
            ports=ports,
            allocations=AllocationManager(
                max_allocations=settings.max_allocations, user_quota=settings.user_quota
            ),
            config=TurnConfig(
                max_lifetime=float(settings.max_lifetime),
                legacy_channels=settings.legacy_channels,
                max_bps=settings.max_bps,
            ),
            software=settings.software,
            counters=self.counters.turn,
            reservation_key=hmac.new(self._nonce_secret, b"reservation", "sha256").digest(),
        )
        if not settings.user and not settings.auth_secret:
            log.warning("TURN has no credentials (--user / --auth-secret): Allocate gets 401")
        self._listening = await open_listeners(
            self.listeners,
            self.turn.handle_client,
            self.counters.stun,
            reuse_port=self._reuse_port,
            batched=settings.batch_io,
            bound=self._bound,
        )
        dataplane = self._listening.dataplane
        ports.serve(self.turn.handle_peer, self._listening.dispatcher.send, dataplane)
        if dataplane is not None and not settings.max_bps:
            # ChannelData of UDP clients is relayed in the data plane on the core's routes
            # (with --max-bps the core meters every datagram itself).
            self.turn.allocations.routes = RouteTable(dataplane)
        self._timer = asyncio.create_task(self._tick())
        try:
            await self._start_streams()
        except BaseException:
            await self.stop()  # nothing stays bound when the start fails
            raise

    async def _start_streams(self) -> None:
        """TCP on the --listen addresses, TLS on --tls-listen."""
        settings = self.settings
        plain = settings.listen if settings.tcp else []
        endpoints: list[tuple[Endpoint, ssl.SSLContext | None]] = [(e, None) for e in plain]
        if settings.tls_listen:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(settings.cert or "", settings.key or "")
            endpoints += [(e, tls) for e in settings.tls_listen]
        loop = asyncio.get_running_loop()
        for endpoint, context in endpoints:
            index = self._listener_for(endpoint)
            server = await loop.create_server(
                lambda index=index: self._connection(index),
                endpoint.host,
                endpoint.port,
                ssl=context,
                reuse_port=self._reuse_port,
                reuse_address=True,
            )
            self._servers.append(server)
            log.info("STUN/TURN listening on %s %s", "tls" if context else "tcp", endpoint)

    def _listener_for(self, endpoint: Endpoint) -> int:
        """The UDP listener whose STUN identity a stream listener shares."""
        same_family = [x for x in self.listeners if x.address.family == endpoint.family]
        for listener in same_family:
            if listener.address.host == endpoint.host:
                return listener.index
        return (same_family or list(self.listeners))[0].index

    def _connection(self, index: int) -> StreamConnection:
        turn, listening = self.turn, self._listening
        if turn is None or listening is None:
            raise ConnectionError("relay is stopping")

        def closed(connection: StreamConnection) -> None:
            self._connections.discard(connection)
            turn.connection_closed(connection, connection.peer)

        def may_idle_out(connection: StreamConnection) -> bool:
            return turn.allocations.get((connection, connection.peer)) is None

        connection = StreamConnection(
            turn.handle_client,
            listening.dispatcher.send,
            index,
            self.counters.stun,
            channel_max=turn.config.channel_max,
            on_closed=closed,
            may_idle_out=may_idle_out,
        )
        self._connections.add(connection)
        return connection

    async def _tick(self) -> None:
        """Drive the core's timers: wake when it says it next has work (at least once a
        second, so new allocations need no rescheduling)."""
        loop = asyncio.get_running_loop()
        while True:
            due = self.turn.next_timer() if self.turn is not None else None
            delay = TIMER_INTERVAL if due is None else min(due - loop.time(), TIMER_INTERVAL)
            await asyncio.sleep(max(delay, 0.0))
            if self.turn is not None:
                self.turn.handle_timer(loop.time())

    def snapshot(self) -> RelayCounters:
        """The counters, with the data plane's traffic and the TURN gauges brought up to
        date."""
        listening = self._listening
        if listening is not None and listening.dispatcher.batched is not None:
            listening.dispatcher.batched.fold_counters()
            dataplane = listening.dispatcher.batched.dataplane
            relayed = self.counters.turn
            relayed.to_peer_packets += dataplane.to_peer_packets
            relayed.to_peer_bytes += dataplane.to_peer_bytes
            relayed.to_client_packets += dataplane.to_client_packets
            relayed.to_client_bytes += dataplane.to_client_bytes
            dataplane.to_peer_packets = dataplane.to_peer_bytes = 0
            dataplane.to_client_packets = dataplane.to_client_bytes = 0
        turn = self.turn
        if turn is not None:
            gauges = self.counters.turn
            allocations = list(turn.allocations)
            gauges.allocations = len(allocations)
            gauges.permissions = sum(len(a.permissions) for a in allocations)
            gauges.channels = sum(len(a.channels) for a in allocations)
            routes = turn.allocations.routes
            gauges.routed_channels = len(routes) if isinstance(routes, RouteTable) else 0
        return self.counters

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self.turn is not None:
            self.turn.close()
        if self._ports is not None:
            self._ports.stop()
        if self._listening is not None:
            self._listening.close()
            self._listening = None

    @property
    def running(self) -> bool:
        return self._listening is not None
