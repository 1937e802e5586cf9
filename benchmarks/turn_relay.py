"""TURN relaying over UDP: natkit vs coturn, in one run.

Three parts, all on by default:

**Throughput** - every target (``--targets``, default ``coturn,natkit``) is started on
loopback with one relay thread/worker, pinned to ``--server-cpu``.  One echo peer
(``turnutils_peer``) and, per round, one ``turnutils_uclient`` run are pinned to
``--client-cpu``.  uclient opens ``--clients`` sessions, each sending ``--messages``
messages of ``--length`` bytes every ``--interval-ms`` ms through its allocation to the
peer (ChannelData, or Send indications with ``--send-indications``) and counts the echoes.
uclient runs with ``-c`` (no RTCP companion allocation) unless ``--rtcp``: with ``-c``
every session is one plain Allocate; without it uclient pairs allocations with EVEN-PORT
and RESERVATION-TOKEN, which measures allocation bookkeeping more than the data path.
Rounds are interleaved across targets (the order rotates every round); medians are
reported.

Per round the benchmark reads uclient's summary (``tot_send_msgs``/``tot_recv_msgs``,
``Total lost packets``, ``Average round trip delay``, ``total send dropped``) and
timestamps uclient's once-a-second progress lines itself:

* ``delivered/s`` = the steady rate: echoed messages counted between the first and the
  last progress line strictly inside the run, divided by the time between those lines
  (whole 1 s intervals only: the run's start and end fall anywhere inside an interval and
  would move a whole-run rate by up to ~10% per round). ``window_s`` is the whole active
  window, from the last line before sending to the first line with the final count.
  uclient's own ``Total transmit time`` is whole seconds and includes the time it waits
  for lost messages before giving up, so it is printed but not used for the rate.
* ``loss %`` is uclient's own figure (messages sent, no echo received).

uclient paces itself at about 42k messages/s on one core of the development machine,
below what either relay carries, so both deliver everything it sends and this part
compares their cost (server CPU, round-trip time) more than their capacity.

**Capacity** (``--no-capacity`` skips it) - per round each target is started fresh,
``--capacity-clients`` UDP sockets each get an allocation with channel 0x4000 bound to a C
echo peer, and ``turn_loadgen`` (``benchmarks/turn_loadgen.c``, pinned with the peer to
``--client-cpu``) keeps ``--capacity-window`` ChannelData messages of ``--length`` bytes in
flight on every socket for ``--capacity-seconds`` after a 1 s warm-up, sending one more
for each valid echo. The relay's one core saturates: echoes per second is the ChannelData
round-trip rate it sustains, ``loss %`` the messages a socket waited 300 ms for in vain.

**Memory** (``--memory`` alone, or part of the default run) - every target is restarted
fresh with a raised RLIMIT_NOFILE and ``--memory-allocations`` (default 10,000)
allocations are made from this one process: one UDP socket per allocation (an allocation
is keyed by the client's 5-tuple), bound to 127.0.0.2, 127.0.0.3, ... with
``--sockets-per-ip`` each, all kept open until the server is measured.  The Allocate
exchange (401 -> authenticated retry with MESSAGE-INTEGRITY) is done with natkit's STUN
codec, pipelined (``--memory-window`` in flight, retransmission, a deadline).  The
figure is (VmRSS after - VmRSS before) / successful allocations, summed over every
process of the server's session (natkit worker(s), coturn's single multi-threaded process).

Run::

    .venv/bin/python benchmarks/turn_relay.py                       # all parts, ~5 min
    .venv/bin/python benchmarks/turn_relay.py --no-memory --rounds 5 --json
    .venv/bin/python benchmarks/turn_relay.py --memory               # memory part only
    .venv/bin/python benchmarks/turn_relay.py --send-indications --targets natkit

Exit status is non-zero if a requested target failed to start or answer, or a uclient run
produced no summary.  All traffic stays on loopback; every child is wrapped in ``timeout``
and killed (its whole session) on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import secrets
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness import (  # noqa: E402
    HOST,
    Children,
    Server,
    add_cpu_arguments,
    build_c,
    free_udp_port,
    preexec,
    ratio,
    read_ready_port,
    session_cpu_seconds,
    session_pids,
    stop_failed,
)

from relay.stun import (  # noqa: E402
    AttributeType,
    ErrorCode,
    Message,
    MessageClass,
    Method,
    StunError,
    long_term_key,
    parse,
)

USER = "bench"
PASSWORD = secrets.token_hex(8)
REALM = "natkit.test"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DEFAULT_TARGETS = "coturn,natkit"
NOFILE_WANTED = 65536


def nofile_limit() -> int:
    """What a child may get: 65536, or the hard limit if lower and not raisable."""
    return min(NOFILE_WANTED, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


class TargetError(Exception):
    """A target could not be started, checked or measured."""


# ----------------------------------------------------------------------------- TURN


def turn_request(
    method: Method,
    txid: bytes,
    attrs: list[tuple[int, Any]],
    auth: tuple[str, str, bytes] | None = None,
) -> bytes:
    """A TURN request; ``auth`` = (realm, nonce, key) signs it as USER."""
    if auth is None:
        return Message(method, MessageClass.REQUEST, txid, tuple(attrs)).encode()
    realm, nonce, key = auth
    attrs = [
        *attrs,
        (AttributeType.USERNAME, USER),
        (AttributeType.REALM, realm),
        (AttributeType.NONCE, nonce),
    ]
    msg = Message(method, MessageClass.REQUEST, txid, tuple(attrs))
    return msg.encode(integrity_key=key, fingerprint=True)


def allocate_request(txid: bytes, auth: tuple[str, str, bytes] | None = None) -> bytes:
    """An Allocate request for a UDP relay; ``auth`` = (realm, nonce, key) signs it."""
    return turn_request(Method.ALLOCATE, txid, [(AttributeType.REQUESTED_TRANSPORT, 17)], auth)


def error_of(msg: Message) -> str:
    err = msg.get(AttributeType.ERROR_CODE)
    if isinstance(err, ErrorCode):
        return f"{err.code} {err.reason}".strip()
    return "error without ERROR-CODE"


def turn_check(port: int, timeout: float = 0.5) -> None:
    """An unauthenticated Allocate must be answered with 401 carrying REALM and NONCE."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((HOST, 0))
        txid = secrets.token_bytes(12)
        sock.sendto(allocate_request(txid), (HOST, port))
        try:
            data, _ = sock.recvfrom(4096)
        except (TimeoutError, ConnectionRefusedError) as exc:
            raise TargetError(f"no answer to an Allocate request ({exc!r})") from None
        msg = parse(data)
        if msg.transaction_id != txid or msg.method != Method.ALLOCATE:
            raise TargetError("answer is not for our Allocate")
        if msg.message_class != MessageClass.ERROR or not error_of(msg).startswith("401"):
            raise TargetError(f"expected 401 to an unauthenticated Allocate, got {msg!r}")
        if msg.get(AttributeType.REALM) is None or msg.get(AttributeType.NONCE) is None:
            raise TargetError("401 without REALM or NONCE")


# ------------------------------------------------------------------------ processes


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def rss_kib(session: int) -> dict[str, int]:
    """VmRSS (KiB) of every process in the session except the ``timeout`` wrapper."""
    out: dict[str, int] = {}
    for pid in session_pids(session):
        name = process_name(pid)
        if name == "timeout":
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if m:
            out[f"{name}[{pid}]"] = int(m.group(1))
    return out


def read_metric(port: int | None, name: str) -> float | None:
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


@dataclass
class Target:
    name: str
    description: str
    server: Server | None = None
    metrics_port: int | None = None
    status: str = "pending"  # pending | ok | failed
    error: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    capacity: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [float(r[key]) for r in self.rounds if r.get(key) is not None]
        return statistics.median(values) if values else None

    def fail(self, message: str) -> None:
        self.status = "failed"
        self.error = self.error + ("\n" if self.error else "") + message
        self.error += stop_failed(self.server)


class Runner(Children):
    def __init__(self, args: argparse.Namespace, workdir: Path, lifetime: float) -> None:
        super().__init__(workdir, lifetime)
        self.args = args
        self.commands: dict[str, str] = {}

    def spawn_recorded(
        self, name: str, argv: Sequence[str], cpu: int | None, nofile: int | None = None
    ) -> Server:
        """``spawn``, keeping the command line for the report."""
        self.commands[name] = shlex.join(argv)
        return self.spawn(name, argv, cpu, nofile=nofile)

    def start_target(self, target: Target, tag: str, nofile: int | None) -> Server:
        a = self.args
        port = free_udp_port()
        state = self.workdir / f"{target.name}-{tag}"
        state.mkdir(exist_ok=True)
        if target.name == "coturn":
            exe = shutil.which("turnserver")
            if exe is None:
                raise TargetError("turnserver not found (apt-get install coturn)")
            lo, hi = a.coturn_ports.split("-")
            argv = [
                exe,
                "-n",  # no configuration file
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--no-tcp",
                "--no-tcp-relay",
                "-L",
                HOST,
                "--listening-port",
                str(port),
                "--relay-ip",
                HOST,
                "--relay-threads",
                "1",
                "--min-port",
                lo,
                "--max-port",
                hi,
                "--allow-loopback-peers",
                "--user",
                f"{USER}:{PASSWORD}",
                "--realm",
                REALM,
                "--lt-cred-mech",
                "--total-quota",
                "0",
                "--user-quota",
                "0",
                "--no-stdout-log",
                "--simple-log",
                "--log-file",
                str(state / "turn.log"),
                "--pidfile",
                str(state / "turn.pid"),
                "--db",
                str(state / "turndb"),
                *shlex.split(a.coturn_extra),
            ]
        elif target.name == "natkit":
            lo, hi = a.natkit_ports.split("-")
            target.metrics_port = free_udp_port()  # the TCP port of that number is free too
            argv = [
                str(VENV_PYTHON),
                "-m",
                "natkit",
                "relay",
                "--workers",
                "1",
                "--listen",
                f"{HOST}:{port}",
                "--user",
                f"{USER}:{PASSWORD}",
                "--realm",
                REALM,
                "--allow-peer",
                "127.0.0.0/8",
                "--metrics-listen",
                f"{HOST}:{target.metrics_port}",
                "--log-level",
                "warning",
                "--min-port",
                lo,
                "--max-port",
                hi,
                "--max-allocations",
                str(max(20000, 2 * a.memory_allocations)),
                *shlex.split(a.natkit_extra),
            ]
        else:
            raise TargetError(f"unknown target {target.name!r}")
        server = self.spawn_recorded(f"{target.name}-{tag}", argv, a.server_cpu, nofile)
        server.port = port
        target.server = server
        deadline = time.monotonic() + a.start_timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if not server.alive():
                raise TargetError(f"exited with status {server.proc.returncode} during start")
            try:
                turn_check(port, timeout=0.3)
                return server
            except (TargetError, OSError, StunError) as exc:
                last = str(exc)
                time.sleep(0.1)
        raise TargetError(f"did not answer TURN within {a.start_timeout:g}s ({last})")


# ----------------------------------------------------------------------- throughput

RE_TOTALS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$")
RE_PROGRESS = re.compile(r"msz=(\d+), tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
RE_TRANSMIT = re.compile(r"Total transmit time is (\d+)")
RE_CONNECT = re.compile(r"Total connect time is (\d+)")
RE_LOST = re.compile(
    r"Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+) \(([\d.]+)%\)"
)
RE_RTT = re.compile(r"Average round trip delay ([\d.]+) ms; min = (\d+) ms, max = (\d+) ms")
RE_JITTER = re.compile(r"Average jitter ([-\d.na]+) ms")
RE_PROBLEM = re.compile(r"error|cannot|fail|wrong|mismatch|refused", re.IGNORECASE)


def parse_uclient(lines: list[tuple[float, str]]) -> dict[str, Any]:
    """Summary figures plus the active window from timestamped uclient output lines."""
    res: dict[str, Any] = {}
    progress: list[tuple[float, int, int]] = []
    problems: Counter[str] = Counter()
    for t, line in lines:
        if m := RE_PROGRESS.search(line):
            progress.append((t, int(m.group(2)), int(m.group(3))))
        elif (m := RE_TOTALS.search(line)) and "sent" not in res:
            res["sent"], res["received"] = int(m.group(1)), int(m.group(2))
            res["t_summary"] = t
        elif (m := RE_TRANSMIT.search(line)) and "transmit_s" not in res:
            res["transmit_s"] = int(m.group(1))
        elif (m := RE_CONNECT.search(line)) and "connect_s" not in res:
            res["connect_s"] = int(m.group(1))
        elif (m := RE_LOST.search(line)) and "lost" not in res:
            res["lost"], res["loss_pct"] = int(m.group(1)), float(m.group(2))
            res["send_dropped"], res["send_dropped_pct"] = int(m.group(3)), float(m.group(4))
        elif (m := RE_RTT.search(line)) and "rtt_ms" not in res:
            res["rtt_ms"] = float(m.group(1))
            res["rtt_max_ms"] = int(m.group(3))
        elif (m := RE_JITTER.search(line)) and "jitter_ms" not in res:
            with contextlib.suppress(ValueError):
                res["jitter_ms"] = float(m.group(1))
        elif RE_PROBLEM.search(line):
            problems[re.sub(r"^\d+: : ", "", line.strip())] += 1
    res["problems"] = dict(problems.most_common(8))
    res["problem_lines"] = sum(problems.values())
    if "sent" not in res:
        return res
    final = res["received"]
    start = next((t for t, s, _ in reversed(progress) if s == 0), None)
    if start is None:  # no progress line before sending began: use the first one
        start = progress[0][0] if progress else None
    end = next((t for t, _, r in progress if r >= final), res["t_summary"])
    if start is not None and end > start:
        res["window_s"] = round(end - start, 3)
        res["delivered_per_s"] = round(final / (end - start), 1)
        # The window's ends fall anywhere within a 1 s progress interval, which moves the
        # rate above by up to ~10% per round; between the first and the last progress line
        # strictly inside the run, every interval is whole: the steady delivered rate.
        inside = [(t, r) for t, _, r in progress if 0 < r < final]
        if len(inside) >= 3 and inside[-1][0] > inside[0][0]:
            (t0, r0), (t1, r1) = inside[0], inside[-1]
            res["delivered_per_s"] = round((r1 - r0) / (t1 - t0), 1)
        peak = 0.0
        for (t0, _, r0), (t1, _, r1) in itertools.pairwise(progress):
            if t1 > t0:
                peak = max(peak, (r1 - r0) / (t1 - t0))
        res["peak_delivered_per_s"] = round(peak, 1)
    if res.get("transmit_s"):
        res["uclient_rate"] = round(final / res["transmit_s"], 1)
    return res


def run_uclient(runner: Runner, target: Target, peer_port: int) -> dict[str, Any]:
    a = runner.args
    assert target.server is not None
    exe = shutil.which("turnutils_uclient")
    if exe is None:
        raise TargetError("turnutils_uclient not found (apt-get install coturn)")
    argv = [exe, "-u", USER, "-w", PASSWORD, "-e", HOST, "-r", str(peer_port)]
    argv += ["-n", str(a.messages), "-m", str(a.clients), "-l", str(a.length)]
    argv += ["-z", str(a.interval_ms), "-p", str(target.server.port)]
    if not a.rtcp:
        argv.append("-c")
    if a.send_indications:
        argv.append("-s")
    argv.append(HOST)
    runner.commands["uclient"] = shlex.join(argv)
    limit = a.uclient_timeout
    cpu0 = session_cpu_seconds(target.server.proc.pid)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        runner.wrap(argv, limit),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec(a.client_cpu, None),
    )
    lines: list[tuple[float, str]] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # EOF when uclient exits (or timeout kills it)
            lines.append((time.monotonic(), raw.decode(errors="replace")))
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    wall = time.monotonic() - t0
    res = parse_uclient(lines)
    res["returncode"] = proc.returncode
    res["wall_s"] = round(wall, 2)
    res["server_cpu_s"] = round(session_cpu_seconds(target.server.proc.pid) - cpu0, 2)
    if "sent" not in res:
        tail = "".join(line for _, line in lines[-8:])
        raise TargetError(f"uclient produced no summary (status {proc.returncode}):\n{tail}")
    if res["server_cpu_s"] > 0:
        # Messages relayed (both legs) per second of server CPU: what one core could carry.
        res["per_cpu_s"] = round(res["received"] / res["server_cpu_s"])
    return res


def throughput(runner: Runner, targets: list[Target], log: Any) -> None:
    a = runner.args
    peer_exe = shutil.which("turnutils_peer")
    if peer_exe is None:
        for t in targets:
            t.fail("turnutils_peer not found (apt-get install coturn)")
        return
    peer_port = free_udp_port()
    peer = runner.spawn_recorded("peer", [peer_exe, "-L", HOST, "-p", str(peer_port)], a.client_cpu)
    time.sleep(0.3)
    for target in targets:
        target.status = "ok"
    for rnd in range(a.rounds):
        live = [t for t in targets if t.status == "ok"]
        if not live:
            break
        shift = rnd % len(live)
        for target in live[shift:] + live[:shift]:
            # A fresh server every round: uclient leaves its allocations behind, and a
            # later round reusing a client port would meet them (437, then ChannelBind 400).
            try:
                server = runner.start_target(target, f"tput{rnd}", None)
                if rnd == 0:
                    print(f"[start] {target.name}: port {server.port}", file=log)
                if not peer.alive():
                    raise TargetError("turnutils_peer died")
                res = run_uclient(runner, target, peer_port)
                res["allocations_after"] = read_metric(
                    target.metrics_port, "natkit_turn_allocations"
                )
                if not server.alive():
                    raise TargetError("server process died during the round")
                turn_check(server.port, timeout=1.0)
                target.rounds.append(res)
                print(
                    f"[round {rnd + 1}/{a.rounds}] {target.name:<7} "
                    f"delivered {res.get('delivered_per_s', 0) / 1000:6.1f}k/s "
                    f"recv {res['received']}/{res['sent']} loss {res.get('loss_pct', 0):.2f}% "
                    f"rtt {res.get('rtt_ms', 0):.1f} ms send-dropped "
                    f"{res.get('send_dropped', 0)} problems {res['problem_lines']} "
                    f"(wall {res['wall_s']:.0f}s)",
                    file=log,
                )
            except (TargetError, OSError, StunError, subprocess.SubprocessError) as exc:
                target.fail(str(exc))
                print(f"[round {rnd + 1}] {target.name}: FAILED - {exc}", file=log)
            finally:
                if target.server is not None:
                    target.server.stop()
                    target.server = None
    peer.stop()


# --------------------------------------------------------------------------- memory


@dataclass
class Pending:
    sock: socket.socket
    txid: bytes = b""
    stage: int = 0  # 0: unauthenticated Allocate sent, 1: authenticated sent, 2: done
    sent_at: float = 0.0
    tries: int = 0
    auth: tuple[str, str, bytes] | None = None


def raise_own_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_allocations(
    port: int, count: int, per_ip: int, window: int, deadline_s: float
) -> tuple[dict[str, Any], list[socket.socket]]:
    """Create ``count`` allocations on HOST:port; return stats and the open sockets."""
    keys: dict[tuple[str, str], bytes] = {}
    socks: list[socket.socket] = []
    stats: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    ep = select.epoll()
    by_fd: dict[int, Pending] = {}
    todo: list[Pending] = []
    try:
        for i in range(count):
            ip = f"127.0.0.{2 + i // per_ip}"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.setblocking(False)
            s.bind((ip, 0))
            s.connect((HOST, port))
            p = Pending(s)
            by_fd[s.fileno()] = p
            ep.register(s.fileno(), select.EPOLLIN)
            todo.append(p)
        todo.reverse()
        in_flight: dict[int, Pending] = {}
        t0 = time.monotonic()
        deadline = t0 + deadline_s
        rto = 0.5

        def send(p: Pending) -> None:
            p.txid = secrets.token_bytes(12)
            p.sent_at = time.monotonic()
            p.tries += 1
            try:
                p.sock.send(allocate_request(p.txid, p.auth))
                stats["sent"] += 1
            except OSError as exc:
                errors[f"send: {exc.strerror}"] += 1

        while (todo or in_flight) and time.monotonic() < deadline:
            while todo and len(in_flight) < window:
                p = todo.pop()
                in_flight[p.sock.fileno()] = p
                send(p)
            for fd, _ in ep.poll(0.05, maxevents=1024):
                p = by_fd[fd]
                while True:
                    try:
                        data = p.sock.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        errors[f"recv: {exc.strerror}"] += 1
                        break
                    try:
                        msg = parse(data)
                    except StunError:
                        errors["unparseable response"] += 1
                        continue
                    if msg.transaction_id != p.txid or p.stage == 2:
                        stats["stale responses"] += 1
                        continue
                    if msg.message_class == MessageClass.ERROR:
                        err = error_of(msg)
                        realm = msg.get(AttributeType.REALM)
                        nonce = msg.get(AttributeType.NONCE)
                        retry_auth = err[:3] in ("401", "438") and p.tries < 4
                        if retry_auth and isinstance(realm, str) and isinstance(nonce, str):
                            key = keys.get((realm, USER))
                            if key is None:
                                key = keys[(realm, USER)] = long_term_key(USER, realm, PASSWORD)
                            p.auth = (realm, nonce, key)
                            p.stage = 1
                            send(p)
                        else:
                            errors[err] += 1
                            p.stage = 2
                            in_flight.pop(fd, None)
                    elif msg.message_class == MessageClass.SUCCESS:
                        if msg.get(AttributeType.XOR_RELAYED_ADDRESS) is None:
                            errors["success without XOR-RELAYED-ADDRESS"] += 1
                        else:
                            stats["allocated"] += 1
                        p.stage = 2
                        in_flight.pop(fd, None)
            now = time.monotonic()
            for fd, p in list(in_flight.items()):
                if now - p.sent_at > rto:
                    if p.tries >= 6:
                        errors["no answer (6 tries)"] += 1
                        del in_flight[fd]
                    else:
                        stats["retransmits"] += 1
                        send(p)
        stats["unfinished at deadline"] = len(todo) + len(in_flight)
        out: dict[str, Any] = {
            "requested": count,
            "allocated": stats["allocated"],
            "seconds": round(time.monotonic() - t0, 2),
            "requests_sent": stats["sent"],
            "retransmits": stats["retransmits"],
            "unfinished": stats["unfinished at deadline"],
            "errors": dict(errors.most_common(8)),
        }
        return out, socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        ep.close()


# ------------------------------------------------------------------------- capacity

CAPACITY_CHANNEL = 0x4000
TURN_LOADGEN_SRC = HERE / "turn_loadgen.c"


def transact(sock: socket.socket, build: Any, tries: int = 4) -> Message:
    """Send ``build(txid)`` until its answer comes (0.5 s per try); the answer."""
    for _ in range(tries):
        txid = secrets.token_bytes(12)
        sock.send(build(txid))
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = parse(sock.recv(4096))
            except (TimeoutError, StunError):
                continue
            if msg.transaction_id == txid:
                return msg
    raise TargetError("no answer to a TURN request")


def channel_client(port: int, peer: tuple[str, int]) -> socket.socket:
    """A UDP socket holding an allocation on HOST:port with CAPACITY_CHANNEL bound to
    ``peer``, connected to the server and non-blocking."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
        sock.connect((HOST, port))
        challenge = transact(sock, allocate_request)
        realm, nonce = challenge.get(AttributeType.REALM), challenge.get(AttributeType.NONCE)
        if not isinstance(realm, str) or not isinstance(nonce, str):
            raise TargetError(f"Allocate: expected a 401 challenge, got {error_of(challenge)}")
        auth = (realm, nonce, long_term_key(USER, realm, PASSWORD))
        allocated = transact(sock, lambda txid: allocate_request(txid, auth))
        if allocated.message_class != MessageClass.SUCCESS:
            raise TargetError(f"Allocate: {error_of(allocated)}")
        bind_attrs: list[tuple[int, Any]] = [
            (AttributeType.CHANNEL_NUMBER, CAPACITY_CHANNEL),
            (AttributeType.XOR_PEER_ADDRESS, peer),
        ]
        bound = transact(
            sock, lambda txid: turn_request(Method.CHANNEL_BIND, txid, bind_attrs, auth)
        )
        if bound.message_class != MessageClass.SUCCESS:
            raise TargetError(f"ChannelBind: {error_of(bound)}")
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


def capacity(runner: Runner, targets: list[Target], log: Any) -> None:
    """Each target, fresh per round: ``--capacity-clients`` allocations with a channel to
    a C echo peer, then turn_loadgen keeps ``--capacity-window`` ChannelData messages in
    flight on each for ``--capacity-seconds``: the echoes per second the relay sustains."""
    a = runner.args
    generator = str(build_c(TURN_LOADGEN_SRC))
    echo = runner.spawn(
        "echo",
        [generator, "--echo", "-d", f"{runner.lifetime:.0f}", f"{HOST}:0"],
        a.client_cpu,
        pipe=True,
    )
    peer = (HOST, read_ready_port(echo, a.start_timeout))
    for r in range(a.rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for target in order:  # a target that failed a uclient round is measured here too
            socks: list[socket.socket] = []
            try:
                server = runner.start_target(target, f"cap{r}", None)
                socks = [channel_client(server.port, peer) for _ in range(a.capacity_clients)]
                fds = [s.fileno() for s in socks]
                argv = [generator, "-d", str(a.capacity_seconds), "-W", "1"]
                argv += ["-w", str(a.capacity_window), "-l", str(a.length)]
                argv += ["-n", str(CAPACITY_CHANNEL)]
                if a.client_cpu is not None:
                    argv += ["-c", str(a.client_cpu)]
                runner.commands["turn_loadgen"] = shlex.join([*argv, "FD..."])
                cpu0 = server.cpu_seconds()
                done = subprocess.run(
                    [*argv, *map(str, fds)],
                    pass_fds=fds,
                    capture_output=True,
                    text=True,
                    timeout=a.capacity_seconds + 30,
                    check=False,
                )
                cpu = server.cpu_seconds() - cpu0
                if done.returncode != 0:
                    raise TargetError(f"turn_loadgen failed: {done.stderr.strip()}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                sent = max(1, result["sent"])
                result["loss_pct"] = round(100.0 * result["lost"] / sent, 3)
                result["server_cpu_pct"] = round(100.0 * cpu / (a.capacity_seconds + 1), 1)
                target.capacity.append(result)
                print(
                    f"[capacity {r + 1}/{a.rounds}] {target.name:<7} "
                    f"{result['rate'] / 1000:6.1f}k echoes/s, lost {result['lost']} "
                    f"({result['loss_pct']}%), invalid {result['invalid']}, "
                    f"server CPU {result['server_cpu_pct']}%",
                    file=log,
                    flush=True,
                )
            except (TargetError, OSError, subprocess.SubprocessError, ValueError) as exc:
                target.fail(f"capacity: {exc}")
            finally:
                for s in socks:
                    s.close()
                if target.server is not None:
                    target.server.stop()
                    target.server = None


def memory(runner: Runner, targets: list[Target], log: Any) -> None:
    a = runner.args
    raise_own_nofile(a.memory_allocations + 1024)
    for target in targets:
        socks: list[socket.socket] = []
        result: dict[str, Any] = {}
        target.memory = result
        try:
            server = runner.start_target(target, "mem", nofile_limit())
            time.sleep(a.settle)
            before = rss_kib(server.proc.pid)
            result["rss_before_kib"] = before
            stats, socks = make_allocations(
                server.port,
                a.memory_allocations,
                a.sockets_per_ip,
                a.memory_window,
                a.memory_deadline,
            )
            result.update(stats)
            time.sleep(a.settle)
            if not server.alive():
                raise TargetError("server died while allocating")
            after = rss_kib(server.proc.pid)
            result["rss_after_kib"] = after
            result["server_allocations_gauge"] = read_metric(
                target.metrics_port, "natkit_turn_allocations"
            )
            delta = sum(after.values()) - sum(before.values())
            result["rss_delta_kib"] = delta
            if target.status == "pending":
                target.status = "ok"
            if stats["allocated"]:
                result["kib_per_allocation"] = round(delta / stats["allocated"], 2)
            print(
                f"[memory] {target.name:<7} {stats['allocated']}/{a.memory_allocations} "
                f"allocations in {stats['seconds']:.1f}s, RSS {sum(before.values()) / 1024:.1f}"
                f" -> {sum(after.values()) / 1024:.1f} MiB, "
                f"{result.get('kib_per_allocation', float('nan')):.2f} KiB/allocation"
                + (f", errors {stats['errors']}" if stats["errors"] else ""),
                file=log,
            )
        except (TargetError, OSError, StunError) as exc:
            result["error"] = str(exc)
            target.fail(f"memory part: {exc}")
            print(f"[memory] {target.name}: FAILED - {exc}", file=log)
        finally:
            for s in socks:
                s.close()
            if target.server is not None:
                target.server.stop()


# ------------------------------------------------------------------------ reporting


def report(targets: list[Target], args: argparse.Namespace, runner: Runner) -> dict[str, Any]:
    by = {t.name: t for t in targets}
    meds = {
        t.name: {
            k: t.median(k)
            for k in (
                "delivered_per_s",
                "peak_delivered_per_s",
                "sent",
                "received",
                "loss_pct",
                "send_dropped",
                "rtt_ms",
                "jitter_ms",
                "transmit_s",
                "uclient_rate",
                "server_cpu_s",
                "per_cpu_s",
                "window_s",
            )
        }
        for t in targets
    }

    def m(name: str, key: str) -> float | None:
        return meds.get(name, {}).get(key) if name in by else None

    mem = {t.name: (t.memory or {}).get("kib_per_allocation") for t in targets}

    def cap(name: str, key: str) -> float | None:
        values = [float(r[key]) for t in targets if t.name == name for r in t.capacity]
        return statistics.median(values) if values else None

    ratios = {
        "delivered natkit/coturn": ratio(
            m("natkit", "delivered_per_s"), m("coturn", "delivered_per_s")
        ),
        "loss natkit/coturn": ratio(m("natkit", "loss_pct"), m("coturn", "loss_pct")),
        "rtt natkit/coturn": ratio(m("natkit", "rtt_ms"), m("coturn", "rtt_ms")),
        # The same messages through each: CPU per relayed message, the efficiency ratio
        # that uclient's own ceiling (~35k delivered/s here) does not mask.
        "server cpu natkit/coturn": ratio(m("natkit", "server_cpu_s"), m("coturn", "server_cpu_s")),
        "msgs per cpu-s natkit/coturn": ratio(m("natkit", "per_cpu_s"), m("coturn", "per_cpu_s")),
        "capacity natkit/coturn": ratio(cap("natkit", "rate"), cap("coturn", "rate")),
        "memory natkit/coturn": ratio(mem.get("natkit"), mem.get("coturn")),
    }
    pinning = (
        f"server CPU {args.server_cpu}, uclient+peer CPU {args.client_cpu}"
        if args.server_cpu is not None
        else "nothing pinned"
    )
    results: dict[str, Any] = {
        "config": {
            "clients": args.clients,
            "messages": args.messages,
            "length": args.length,
            "interval_ms": args.interval_ms,
            "rounds": args.rounds,
            "send_indications": args.send_indications,
            "rtcp": args.rtcp,
            "memory_allocations": args.memory_allocations,
            "pinning": pinning,
        },
        "commands": runner.commands,
        "targets": {
            t.name: {
                "status": t.status,
                "error": t.error or None,
                "description": t.description,
                "medians": meds[t.name],
                "rounds": t.rounds,
                "memory": t.memory,
                "capacity": t.capacity,
            }
            for t in targets
        },
        "ratios": ratios,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    print()
    if args.throughput:
        mode = "Send indications" if args.send_indications else "ChannelData"
        print(
            f"TURN relay throughput: uclient {args.clients} clients x {args.messages} msgs, "
            f"{args.length} B every {args.interval_ms} ms, {mode}, "
            f"{'with' if args.rtcp else 'no'} RTCP allocations; median of {args.rounds} "
            f"rounds; {pinning}"
        )
        header = (
            f"{'target':<8}{'delivered/s':>12}{'peak/s':>10}{'sent':>9}{'received':>10}"
            f"{'loss %':>8}{'RTT ms':>8}{'jitter':>8}{'snd-drop':>9}{'srv cpu s':>10}"
            f"{'msgs/cpu-s':>11}"
        )
        print(header)
        print("-" * len(header))
        for t in targets:
            if not t.rounds:
                print(f"{t.name:<8}{'FAILED':>12}  {t.error.splitlines()[0] if t.error else ''}")
                continue
            md = meds[t.name]

            def f(key: str, fmt: str, md: dict[str, float | None] = md) -> str:
                v = md[key]
                return "-" if v is None else format(v, fmt)

            print(
                f"{t.name:<8}{f('delivered_per_s', ',.0f'):>12}"
                f"{f('peak_delivered_per_s', ',.0f'):>10}{f('sent', '.0f'):>9}"
                f"{f('received', '.0f'):>10}{f('loss_pct', '.2f'):>8}{f('rtt_ms', '.2f'):>8}"
                f"{f('jitter_ms', '.2f'):>8}{f('send_dropped', '.0f'):>9}"
                f"{f('server_cpu_s', '.1f'):>10}{f('per_cpu_s', ',.0f'):>11}"
            )
        print(
            "  delivered/s: messages echoed per second between the first and the last "
            "uclient progress line inside the run (steady state); peak/s: best 1 s interval;\n"
            "  msgs/cpu-s: received / server CPU seconds in the run (allocations included): "
            "the load one server core carries"
        )
        for t in targets:
            problems: Counter[str] = Counter()
            for r in t.rounds:
                problems.update(r.get("problems", {}))
            if problems:
                print(f"  {t.name} uclient problem lines: {dict(problems.most_common(4))}")
    if args.capacity:
        print()
        print(
            f"Capacity: turn_loadgen, {args.capacity_clients} allocations x "
            f"{args.capacity_window} ChannelData messages of {args.length} B in flight, "
            f"{args.capacity_seconds:g} s per round, median of {args.rounds}; {pinning}"
        )
        header = f"{'target':<8}{'echoes/s':>10}{'min':>10}{'max':>10}{'loss %':>8}{'srv cpu':>9}"
        print(header)
        print("-" * len(header))
        for t in targets:
            rates = [r["rate"] for r in t.capacity]
            if not rates:
                print(f"{t.name:<8}{'FAILED':>10}")
                continue
            print(
                f"{t.name:<8}{cap(t.name, 'rate') or 0:>10,.0f}{min(rates):>10,.0f}"
                f"{max(rates):>10,.0f}{cap(t.name, 'loss_pct') or 0:>8.3f}"
                f"{cap(t.name, 'server_cpu_pct') or 0:>8.0f}%"
            )
        print(
            "  echoes/s: ChannelData round trips completed per second (client -> relay -> "
            "peer -> relay -> client), the relay's one core saturated"
        )
    if args.memory:
        print()
        print(f"Memory: {args.memory_allocations} allocations from one client process")
        header = (
            f"{'target':<8}{'allocated':>10}{'seconds':>9}{'RSS before':>12}{'RSS after':>11}"
            f"{'KiB/alloc':>11}"
        )
        print(header)
        print("-" * len(header))
        for t in targets:
            r = t.memory or {}
            if "allocated" not in r:
                print(f"{t.name:<8}{'FAILED':>10}  {r.get('error', '')}")
                continue
            b = sum(r["rss_before_kib"].values()) / 1024
            af = sum(r.get("rss_after_kib", {}).values()) / 1024
            kpa = r.get("kib_per_allocation")
            print(
                f"{t.name:<8}{r['allocated']:>10}{r['seconds']:>9.1f}{b:>10.1f}Mi{af:>9.1f}Mi"
                f"{'-' if kpa is None else format(kpa, '.2f'):>11}"
                + (f"  errors: {r['errors']}" if r["errors"] else "")
                + (f"  unfinished: {r['unfinished']}" if r["unfinished"] else "")
                + (
                    f"  (server gauge: {r['server_allocations_gauge']:.0f} allocations)"
                    if r.get("server_allocations_gauge") is not None
                    else ""
                )
            )
    print()
    for key, value in ratios.items():
        if value is not None:
            print(f"  {key:<24} {value:6.2f}")
        elif key.startswith("loss") and m("coturn", "loss_pct") == 0:
            print(f"  {key:<24}    n/a (coturn lost 0%, natkit {m('natkit', 'loss_pct')}%)")
    natkit_rate, coturn_rate = m("natkit", "delivered_per_s"), m("coturn", "delivered_per_s")
    goal_rate = natkit_rate / coturn_rate if natkit_rate is not None and coturn_rate else None
    if goal_rate is not None:
        loss_ok = (m("natkit", "loss_pct") or 0) <= (m("coturn", "loss_pct") or 0)
        print(
            f"  goal delivered >= 1.0x coturn: {'met' if goal_rate >= 1.0 else 'NOT met'}; "
            f"loss <= coturn's: {'met' if loss_ok else 'NOT met'}"
        )
    capacity_ratio = ratios["capacity natkit/coturn"]
    if capacity_ratio is not None:
        loss_ok = (cap("natkit", "loss_pct") or 0) <= (cap("coturn", "loss_pct") or 0)
        natkit_cap, coturn_cap = cap("natkit", "rate") or 0, cap("coturn", "rate") or 1
        print(
            "  goal delivered at saturation >= 1.0x coturn: "
            f"{'met' if natkit_cap >= coturn_cap else 'NOT met'}; "
            f"loss <= coturn's: {'met' if loss_ok else 'NOT met'}"
        )
    if mem.get("natkit") is not None:
        kpa = mem["natkit"]
        print(f"  goal natkit < 10 KiB/allocation: {'met' if kpa and kpa < 10 else 'NOT met'}")
    for t in targets:
        if t.error:
            print(f"\n{t.name}: {t.error}")
    return results


# ----------------------------------------------------------------------------- main

DESCRIPTIONS = {
    "coturn": "turnserver --relay-threads 1",
    "natkit": "natkit relay --workers 1",
}


@contextlib.contextmanager
def running(args: argparse.Namespace, lifetime: float) -> Iterator[Runner]:
    with tempfile.TemporaryDirectory(prefix="turn_relay.") as tmp:
        runner = Runner(args, Path(tmp), lifetime)
        try:
            yield runner
        finally:
            runner.stop_all()


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    targets = [Target(n, DESCRIPTIONS.get(n, "?")) for n in names]
    lifetime = 60 + len(names) * (
        args.rounds * args.uclient_timeout * (1 if args.throughput else 0)
        + args.rounds * (args.capacity_seconds + 45) * (1 if args.capacity else 0)
        + (args.memory_deadline + 2 * args.settle + args.start_timeout) * (1 if args.memory else 0)
    )
    log = sys.stderr
    summary_ok = True
    with running(args, lifetime) as runner:
        if args.throughput:
            throughput(runner, targets, log)
            summary_ok = all(t.status == "ok" and len(t.rounds) == args.rounds for t in targets)
        if args.capacity:
            capacity(runner, targets, log)
            summary_ok = summary_ok and all(len(t.capacity) == args.rounds for t in targets)
        if args.memory:
            for t in targets:  # a target that failed the throughput part may still do memory
                t.server = None
            memory(runner, targets, log)
            summary_ok = summary_ok and all((t.memory or {}).get("allocated") for t in targets)
        report(targets, args, runner)
    return 0 if summary_ok else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="TURN relaying over UDP: natkit vs coturn (turnutils_uclient load, memory).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--targets", default=DEFAULT_TARGETS, help="comma-separated: coturn,natkit")
    p.add_argument("--clients", type=int, default=100, help="uclient -m")
    p.add_argument("--messages", type=int, default=3000, help="uclient -n (per client)")
    p.add_argument("--length", type=int, default=200, help="uclient -l (bytes)")
    p.add_argument("--interval-ms", type=int, default=1, help="uclient -z")
    p.add_argument("--rounds", type=int, default=3, help="uclient runs per target")
    p.add_argument("--send-indications", action="store_true", help="uclient -s")
    p.add_argument("--rtcp", action="store_true", help="drop uclient -c (RTCP allocations)")
    p.add_argument("--uclient-timeout", type=float, default=90.0, help="limit of one run (s)")
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--memory", action="store_true", help="memory part only")
    part.add_argument("--no-memory", action="store_true", help="no memory part")
    p.add_argument("--no-capacity", action="store_true", help="no capacity part")
    p.add_argument("--capacity-clients", type=int, default=64, help="allocations loaded")
    p.add_argument("--capacity-window", type=int, default=8, help="messages in flight each")
    p.add_argument("--capacity-seconds", type=float, default=5.0, help="measured per round")
    p.add_argument("--memory-allocations", type=int, default=10000)
    p.add_argument("--sockets-per-ip", type=int, default=1000, help="sources 127.0.0.2, ...")
    p.add_argument("--memory-window", type=int, default=256, help="Allocates in flight")
    p.add_argument("--memory-deadline", type=float, default=60.0, help="seconds")
    p.add_argument("--settle", type=float, default=1.0, help="seconds before reading RSS")
    p.add_argument("--natkit-ports", default="20000-31999", help="natkit relay port range")
    p.add_argument("--coturn-ports", default="8000-19999", help="coturn relay port range")
    p.add_argument("--natkit-extra", default="", help="extra natkit relay arguments")
    p.add_argument("--coturn-extra", default="", help="extra turnserver arguments")
    p.add_argument("--start-timeout", type=float, default=15.0)
    add_cpu_arguments(p)
    p.add_argument("--no-pin", action="store_true", help="do not pin anything to CPUs")
    args = p.parse_args(argv)
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    args.throughput = not args.memory
    args.capacity = args.throughput and not args.no_capacity
    args.memory = not args.no_memory
    if not 1 <= args.capacity_window <= 64 or args.capacity_clients < 1:
        p.error("--capacity-window must be 1-64 and --capacity-clients >= 1")
    if args.rounds < 1 or args.clients < 1 or args.messages < 1:
        p.error("--rounds, --clients and --messages must be >= 1")
    if args.memory_allocations > 250 * args.sockets_per_ip:
        p.error("--memory-allocations needs at most 250 source IPs of --sockets-per-ip")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
