"""Port prediction for one "hard" side: the birthday paradox (issue #6).

A NAT with address-and-port-dependent mapping (RFC 4787 §4.1, "symmetric"; Linux's
``masquerade fully-random``) gives its host's socket a new random public port for every
destination. Against a peer behind an endpoint-independent mapping with port-dependent
filtering (a port-restricted cone) the plain punch fails: the easy side (E) cannot know
which port the hard side (H) got toward it, and E's NAT drops H's packets from any port E
never sent to. Tailscale's "How NAT traversal works" (https://tailscale.com/blog/
how-nat-traversal-works, "The birthday paradox") gives the way out, used here:

* H opens ``K`` extra UDP sockets (``PunchConfig.predict_sockets``, 256) and sends the
  probe from every one of them to E's reflexive address: ``K`` mappings on H's NAT, each on
  a random public port, each letting in datagrams from exactly E's address.
  (``SocketFan``, the asyncio side, adopts the punch's ``Link``.)
* E sends the probe to distinct random ports of H's public IP (``punch.Spray``: at most
  ``predict_probes``, 2048, at ``predict_rate`` a second). Each probe hits one of the
  ``K + 1`` mappings with probability ~(K + 1) / 64,512: ~250 probes on average, and 2048
  miss them all with probability ~0.03 %.
* A hit reaches one of H's sockets; H answers from that socket, through that mapping, and
  E's NAT lets the answer in: E sent to exactly that port. The Noise handshake then runs
  as in ``client_sdk.connect.punch`` -- the path is fixed only by authenticated messages.

**Who does what** (``plan``; both sides compute it from the same two candidate lists, so
they agree without any wire change): a side is hard when it offered two ``srflx``
candidates on one IP with different ports (``candidates.mapping_varies``: the connectivity
socket asks each STUN server and its RFC 5780 OTHER-ADDRESS). Exactly one side hard, and
the other offered a ``srflx`` candidate: the hard side fans, the easy side sprays. Both hard
(two random ports to guess: ~64,500² pairs) or neither: no prediction (the relay, or the
plain punch).

**The fan** (``FanRoutes`` decides, sans-IO; ``SocketFan`` does it): every datagram that
arrives for the link on any of its sockets -- or on the main connectivity socket -- goes
to that one link (the punch authenticates). It remembers, per remote address (at most
``MAX_REMEMBERED``), which socket last heard from it, and sends to that address from that
socket; to an address not heard yet it sends from the main socket and -- for the easy
peer's reflexive addresses only (at most ``MAX_FAN_TARGETS``) -- from all ``K`` sockets,
at most once per ``predict_refresh`` seconds (``K`` datagrams a second, not ``K`` per probe
round). Once the path is found the ``K - 1`` other sockets are closed; the path's socket
stays the connection's and is closed when the link ends.

Costs (201-byte probes): H sends at most ``K x 2 x ceil(timeout / predict_refresh)`` extra
datagrams (2560 with the defaults, to addresses the peer offered), E at most
``predict_probes`` (2048) to the one IP the peer offered; H holds ``K + 1`` sockets for the
punch (``K`` is clamped to the free file descriptors under ``RLIMIT_NOFILE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from client_sdk.connect.candidates import Address, mapping_varies, srflx_addresses, varying_ips
from client_sdk.connect.punch import PunchConfig, Spray
from client_sdk.connect.relay import RelaySocket
from client_sdk.connect.udp import ConnectivitySocket, Link
from client_sdk.netcheck.transport import bind_random_port
from client_sdk.secure.session import MessageType, initiation_peer_id, parse_header

__all__ = [
    "FD_RESERVE",
    "MAIN",
    "MAX_FAN_TARGETS",
    "MAX_REMEMBERED",
    "FanRoutes",
    "Prediction",
    "SocketFan",
    "arrange",
    "fan_datagram_bound",
    "fd_budget",
    "plan",
]

log = logging.getLogger(__name__)

MAIN = -1  # FanRoutes' name for the main connectivity socket (fan sockets are 0..K-1)
MAX_FAN_TARGETS = 2  # easy-side reflexive addresses the fan sends to from every socket
MAX_REMEMBERED = 64  # remote addresses whose socket the fan remembers
FD_RESERVE = 64  # file descriptors left free for everything else when sizing a fan
MAX_READS = 64  # datagrams read from one fan socket per wake-up


@dataclass(frozen=True)
class Prediction:
    """This side's part in port prediction: ``"spray"`` toward ``peer_ip`` (the hard
    peer's public IP), or ``"fan"`` toward ``easy`` (the easy peer's reflexive
    addresses)."""

    role: Literal["spray", "fan"]
    peer_ip: str = ""
    easy: tuple[Address, ...] = ()

    def spray(self, config: PunchConfig) -> Spray | None:
        """The ``Spray`` to start the punch with (None for the fan's side)."""
        if self.role != "spray":
            return None
        return Spray.from_config(self.peer_ip, config)


def plan(
    mine: Sequence[Any], theirs: Sequence[Any], config: PunchConfig | None = None
) -> Prediction | None:
    """Our part given the candidates we offered (``mine``) and the peer's (``theirs``,
    from the network); None: no prediction (see the module docstring). Never raises on
    what the network sends."""
    config = config if config is not None else PunchConfig()
    mine_hard, theirs_hard = mapping_varies(mine), mapping_varies(theirs)
    if mine_hard == theirs_hard:  # both easy: the plain punch; both hard: the relay
        return None
    if theirs_hard:
        if config.predict_probes == 0 or not srflx_addresses(mine):
            return None
        return Prediction("spray", peer_ip=varying_ips(theirs)[0])
    easy = srflx_addresses(theirs)[:MAX_FAN_TARGETS]
    if config.predict_sockets == 0 or not easy:
        return None
    return Prediction("fan", easy=easy)


class FanRoutes:
    """Which sockets a fan sends each datagram from (sans-IO; see the module
    docstring). Sockets are ``MAIN`` and ``0`` to ``sockets - 1``."""

    def __init__(self, sockets: int, easy: Iterable[Address], refresh: float) -> None:
        if sockets < 0 or refresh <= 0:
            raise ValueError("need sockets >= 0 and refresh > 0")
        self.open: set[int] = set(range(sockets))
        self.easy = frozenset(easy)
        self.refresh = refresh
        self.fanned = 0  # sends from every socket so far
        self.settled = False
        self._heard: dict[Address, int] = {}  # oldest first
        self._fanned_at: dict[Address, float] = {}

    def heard(self, addr: Address, via: int) -> None:
        """A datagram for the link came from ``addr`` on socket ``via``."""
        if via != MAIN and via not in self.open:
            return
        self._heard.pop(addr, None)
        self._heard[addr] = via
        while len(self._heard) > MAX_REMEMBERED:
            del self._heard[next(iter(self._heard))]

    def socket_for(self, addr: Address) -> int | None:
        """The socket that last heard ``addr`` (and is open), if any."""
        via = self._heard.get(addr)
        return via if via is not None and (via == MAIN or via in self.open) else None

    def route(self, addr: Address, now: float) -> list[int]:
        """The sockets to send a datagram to ``addr`` from, at ``now``."""
        via = self.socket_for(addr)
        if via is not None:
            return [via]
        out = [MAIN]
        if addr in self.easy and self.open and not self.settled:
            last = self._fanned_at.get(addr)
            if last is None or now - last >= self.refresh:
                self._fanned_at[addr] = now
                self.fanned += 1
                out += sorted(self.open)
        return out

    def settle(self, addr: Address | None) -> list[int]:
        """The path to ``addr`` was found: the fan sockets to close (all but the one
        that last heard ``addr``)."""
        keep = self.socket_for(addr) if addr is not None else None
        losers = sorted(self.open - {keep} if keep is not None else self.open)
        self.open -= set(losers)
        self.settled = True
        return losers

    def close(self, via: int) -> None:
        self.open.discard(via)


def fd_budget(wanted: int) -> int:
    """``wanted`` sockets, or fewer if the process's file-descriptor limit
    (``RLIMIT_NOFILE``, soft) leaves less than that beyond ``FD_RESERVE`` (logged)."""
    try:
        import resource
    except ImportError:  # not Unix: no limit to read
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = FD_RESERVE  # no /proc: a guess
    free = max(0, soft - used - FD_RESERVE)
    if wanted > free:
        log.warning(
            "port prediction: %d sockets wanted, %d file descriptors free under "
            "RLIMIT_NOFILE %d (%d open): using %d",
            wanted,
            free,
            soft,
            used,
            free,
        )
        return free
    return wanted


def _open_udp() -> socket.socket:
    return bind_random_port(socket.AF_INET, "0.0.0.0")


class SocketFan:
    """The hard side's sockets for one punch (see the module docstring): the owner of
    the ``Link`` it adopted, sending through its main connectivity socket and ``K`` UDP
    sockets of its own. Made by ``adopt``; it closes its sockets when the link ends."""

    def __init__(
        self,
        main: ConnectivitySocket,
        link: Link,
        routes: FanRoutes,
        sockets: Sequence[socket.socket],
    ) -> None:
        self.main = main
        self.link: Link | None = link
        self.routes = routes
        self._sockets: dict[int, socket.socket] = dict(enumerate(sockets))
        self.sent = 0  # datagrams sent from fan sockets
        self.send_errors = 0
        self.dropped = 0  # datagrams on fan sockets not for the link

    @classmethod
    def adopt(
        cls,
        link: Link,
        easy: Sequence[Address],
        *,
        sockets: int = 256,
        refresh: float = 1.0,
        open_socket: Callable[[], socket.socket] = _open_udp,
    ) -> SocketFan:
        """Open up to ``sockets`` UDP sockets (``open_socket``: bound, non-blocking;
        clamped by ``fd_budget``) and become ``link``'s owner, its main socket (its
        owner until now, a ``ConnectivitySocket``) still carrying it too. Call before
        ``link.start``. ``OSError`` (nothing left open) when a socket cannot be made."""
        main = link.owner
        if not isinstance(main, ConnectivitySocket) or isinstance(main, RelaySocket):
            raise ConnectionError("a fan adopts a direct link of the connectivity socket")
        if main.closed:
            raise ConnectionError("the connectivity socket is closed")
        if link.failure is not None:
            raise ConnectionError(f"the link has ended: {link.failure}")
        count = fd_budget(max(0, sockets))
        opened: list[socket.socket] = []
        loop = asyncio.get_running_loop()
        fan: SocketFan | None = None
        try:
            for _ in range(count):
                opened.append(open_socket())
            fan = cls(main, link, FanRoutes(len(opened), easy[:MAX_FAN_TARGETS], refresh), opened)
            for index, sock in enumerate(opened):
                loop.add_reader(sock.fileno(), fan._readable, index)
        except BaseException:
            if fan is not None:
                fan.close()
            else:
                for sock in opened:
                    sock.close()
            raise
        link.owner = fan
        link.tap = fan._heard
        return fan

    @property
    def sockets_open(self) -> int:
        return len(self._sockets)

    def local_ports(self) -> dict[int, int]:
        """Each open fan socket's local port (for tests and logs)."""
        return {i: int(s.getsockname()[1]) for i, s in self._sockets.items()}

    def close(self) -> None:
        """Close every fan socket (the link, if still on, sends from the main one)."""
        for index in list(self._sockets):
            self._close_socket(index)

    # -- LinkOwner -------------------------------------------------------------------------

    def now(self) -> float:
        return self.main.now()

    def sendto(self, datagram: bytes, addr: Address) -> None:
        for via in self.routes.route(addr, self.now()):
            if via == MAIN:
                self.main.sendto(datagram, addr)
                continue
            sock = self._sockets.get(via)
            if sock is None:
                continue
            try:
                sock.sendto(datagram, addr)
                self.sent += 1
            except OSError:  # a full buffer, an unreachable network: UDP, best effort
                self.send_errors += 1

    def _settled(self, link: Link) -> None:
        self.main._settled(link)
        for index in self.routes.settle(link.punch.addr):
            self._close_socket(index)

    def _forget(self, link: Link) -> None:
        self.main._forget(link)
        self.link = None
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _heard(self, addr: Address, via: object) -> None:
        """``Link.tap``: which socket heard ``addr``."""
        if via is self.main:
            self.routes.heard(addr, MAIN)
        elif isinstance(via, int):
            self.routes.heard(addr, via)

    def _readable(self, index: int) -> None:
        sock = self._sockets.get(index)
        for _ in range(MAX_READS):
            if sock is None or self.link is None:
                return
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error reported on the socket: nothing to read
                continue
            if not self._for_link(data):
                self.dropped += 1
                continue
            self.link.receive(data, (str(addr[0]), int(addr[1])), via=index)
            sock = self._sockets.get(index)  # the link may have settled (and closed it)

    def _for_link(self, data: bytes) -> bool:
        """The connectivity socket's routing rule, for this one link."""
        link = self.link
        header = parse_header(data)
        if link is None or header is None:
            return False
        kind, receiver = header
        if kind is MessageType.INITIATION:
            return not self.routes.settled and initiation_peer_id(data) == link.remote_peer_id
        return receiver == link.punch.local_index

    def _close_socket(self, index: int) -> None:
        sock = self._sockets.pop(index, None)
        self.routes.close(index)
        if sock is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to remove
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()


def arrange(
    link: Link,
    mine: Sequence[Any],
    theirs: Sequence[Any],
    config: PunchConfig,
    *,
    open_socket: Callable[[], socket.socket] = _open_udp,
) -> Spray | None:
    """Port prediction for the direct ``link`` (registered on the connectivity socket,
    not started yet), given the candidates we offered and the peer's: on the hard side
    a ``SocketFan`` adopts the link (``link.owner``; it closes with the link) and None is
    returned; on the easy side the ``Spray`` to pass to ``link.start``; otherwise None.
    A fan that cannot open its sockets is logged and skipped."""
    prediction = plan(mine, theirs, config)
    if prediction is None:
        return None
    if prediction.role == "spray":
        return prediction.spray(config)
    try:
        fan = SocketFan.adopt(
            link,
            prediction.easy,
            sockets=config.predict_sockets,
            refresh=config.predict_refresh,
            open_socket=open_socket,
        )
    except (OSError, ConnectionError) as exc:
        log.warning("port prediction toward %s: no socket fan (%s)", link.remote_peer_id, exc)
        return None
    log.info(
        "port prediction toward %s: %d sockets probing %s",
        link.remote_peer_id,
        fan.sockets_open,
        ", ".join(f"{ip}:{port}" for ip, port in prediction.easy),
    )
    return None


def fan_datagram_bound(config: PunchConfig) -> int:
    """The most datagrams a fan sends from its own sockets during one punch."""
    rounds = math.ceil(config.timeout / config.predict_refresh)
    return config.predict_sockets * MAX_FAN_TARGETS * rounds
