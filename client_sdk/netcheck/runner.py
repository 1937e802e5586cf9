"""What every netcheck test shares: its timers, its sockets (all closed at the end) and
one Binding transaction turned into an ``Answer``."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from types import TracebackType

from client_sdk.netcheck.classify import Answer
from client_sdk.netcheck.stun import Address, Kind, binding_request, new_transaction_id
from client_sdk.netcheck.transport import Pacer, ProbeSocket, Schedule


@dataclass(frozen=True, slots=True)
class Timing:
    """netcheck's timers, in seconds. The defaults keep the default checks under 3 s on
    a working path, and under 1.6 s when UDP is blocked.

    * ``rto``, ``transmissions``, ``last_wait``: every ordinary Binding transaction, RFC
      8489 §6.2.1 with RTO 250 ms: sends at 0, 0.25 and 0.75 s, silence until 1.5 s
      means no answer (``transport`` explains the choice).
    * ``filtering_min``/``filtering_max``: how long RFC 5780 §4.4 tests II and III wait
      for an answer that a filtering NAT drops (silence *is* their result): 0.3 s + 3 x
      test I's round trip, within these bounds; requests resent every ``resend``.
    * ``pace``: the interval between starts of new transactions (RFC 5780 §5).
    * ``relay_timeout``: one latency probe to a relay; ``http_timeout``: the whole
      exchange with the rendezvous.
    """

    rto: float = 0.25
    transmissions: int = 3
    last_wait: float = 0.75
    filtering_min: float = 0.6
    filtering_max: float = 1.2
    resend: float = 0.2
    pace: float = 0.01
    relay_timeout: float = 1.0
    http_timeout: float = 3.0

    @property
    def schedule(self) -> Schedule:
        return Schedule.rto(self.rto, self.transmissions, self.last_wait)

    def filtering_wait(self, rtt: float) -> float:
        return min(max(0.3 + 3 * rtt, self.filtering_min), self.filtering_max)


class Runner:
    """Opens probing sockets (closing them all on exit) and runs Binding transactions
    paced by one ``Pacer``."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.pacer = Pacer(timing.pace)
        self._sockets: list[ProbeSocket] = []

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for probe in self._sockets:
            probe.close()
        self._sockets.clear()

    async def socket(self, family: socket.AddressFamily) -> ProbeSocket:
        probe = await ProbeSocket.open(family)
        self._sockets.append(probe)
        return probe

    async def binding(
        self,
        probe: ProbeSocket,
        destination: Address,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        response_port: int | None = None,
        schedule: Schedule | None = None,
    ) -> Answer | None:
        """One Binding transaction from ``probe`` to ``destination``: its answer (a
        success or an error response), or None when none came."""
        await self.pacer.wait()
        tid = new_transaction_id()
        request = binding_request(
            tid, change_ip=change_ip, change_port=change_port, response_port=response_port
        )
        got = await probe.transact(destination, request, tid, schedule or self.timing.schedule)
        if got is None:
            return None
        received, rtt = got
        message = received.message
        return Answer(
            source=received.source,
            mapped=message.mapped,
            other=message.other_address,
            error_code=message.error_code if message.kind is Kind.ERROR else None,
            rtt=rtt,
        )


def route_source(family: socket.AddressFamily, destination: Address) -> str | None:
    """The local IP the kernel would send from to ``destination`` (a connected UDP socket
    sends nothing); None when there is no route."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(destination)
        except OSError:
            return None
        return str(sock.getsockname()[0])
