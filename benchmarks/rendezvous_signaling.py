"""Rendezvous signaling: WebSocket signals relayed/s and memory per idle WebSocket, in one run.

Targets, each on its own process pinned to ``--server-cpu``:

* ``natkit`` - ``natkit rendezvous`` (memory store, ``--rate-limit 0``): ``/v1/ws``, Ed25519
               challenge, ``{"type": "signal", "to", "data"}``;
* ``peerjs`` - the PeerJS server (npm ``peer``, ``node/peerjs_server.js``: its ``peerjs``
               command without the per-client log lines): ``/peerjs?key=&id=&token=``,
               ``{"type": "CANDIDATE", "dst", "payload"}``;
* ``bare``   - ``node/bare_relay.js``, raw frames forwarded to a fixed partner with no
               parsing (throughput only): the ceiling of a relay on this machine, which shows
               the load generator is not the bottleneck.

1. Throughput (``node/wsload.js throughput``, pinned to ``--client-cpu``; a raw RFC 6455
   client with pre-built frames): ``--pairs`` pairs of authenticated sockets; every socket
   first gets one signal from its partner checked in full, then a closed loop keeps
   ``--inflight`` signals per pair in flight (each signal received is answered by one back),
   and the signals delivered over ``--seconds`` are counted. The signal is a trickled ICE
   candidate (~200 bytes). Rounds interleave the targets; the median is reported.
2. Idle sockets (``node/wsload.js idle``): a fresh server, warmed with ``--warm`` sockets
   opened and closed, then ``--idle`` authenticated sockets held open (answering pings as
   real clients do: natkit's ping/pong, PeerJS's 5 s HEARTBEAT); the server's RSS growth
   (``VmRSS``, once it settles; PeerJS after a full V8 GC) divided by the sockets is its
   memory per connection.

Goals (issue #4): 10,000+ concurrent WebSockets on one natkit process under 10 KiB each;
natkit signals/s above PeerJS.

Needs Node.js and the PeerJS package: ``npm ci --prefix benchmarks/node``. Run::

    .venv/bin/python benchmarks/rendezvous_signaling.py                 # ~1.5 min
    .venv/bin/python benchmarks/rendezvous_signaling.py --rounds 5 --idle 20000 --json

All traffic stays on loopback (source addresses 127.0.0.1-4); every child is bounded by
``timeout`` and killed at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NODE_DIR = HERE / "node"

from harness import (  # noqa: E402
    HOST,
    Children,
    Server,
    add_cpu_arguments,
    free_udp_port,
    preexec,
    print_summary,
    ratio,
    read_ready_port,
    rotation,
    session_pids,
    start_targets,
    stop_failed,
)

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
INSTALL_HINT = "run: npm ci --prefix benchmarks/node"


class TargetError(Exception):
    pass


def node_exe() -> str:
    exe = shutil.which("node")
    if exe is None:
        raise SystemExit(f"node not found (Node.js >= 18 is needed; then {INSTALL_HINT})")
    if not (NODE_DIR / "node_modules" / "peer").is_dir():
        raise SystemExit(f"the PeerJS package is not installed: {INSTALL_HINT}")
    return exe


def nofile_for(sockets: int) -> int:
    """An RLIMIT_NOFILE for ``sockets`` open sockets (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, sockets + 1024)
    return want if hard == resource.RLIM_INFINITY else min(want, hard)


def main_pid(server: Server) -> int:
    """The server's own process (``Children`` starts it under ``timeout``)."""
    pids = [p for p in session_pids(server.proc.pid) if p != server.proc.pid]
    return min(pids) if pids else server.proc.pid


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TargetError(f"no VmRSS for pid {pid}")


def wait_livez(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/livez", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TargetError(f"no /livez answer on port {port} within {timeout}s") from None
            time.sleep(0.1)


def start(children: Children, name: str, args: argparse.Namespace, node: str) -> Server:
    nofile = nofile_for(args.idle + 2 * args.warm)
    if name == "natkit":
        port = free_udp_port()  # free for TCP too
        argv = [str(VENV_PYTHON), "-m", "natkit", "rendezvous", "--host", HOST, "--port"]
        argv += [str(port), "--rate-limit", "0", "--log-level", "warning"]
        server = children.spawn(name, argv, args.server_cpu, nofile=nofile, cwd=REPO)
        server.port = port
        wait_livez(port, args.start_timeout)
        return server
    if name == "peerjs":
        argv = [node, "--expose-gc", "peerjs_server.js", "--host", HOST, "--port", "0"]
        argv += ["--concurrent_limit", str(args.idle + 2 * args.warm + 1000)]
    elif name == "bare":
        argv = [node, "bare_relay.js", "--host", HOST, "--port", "0"]
    else:
        raise TargetError(f"unknown target {name}")
    server = children.spawn(name, argv, args.server_cpu, nofile=nofile, cwd=NODE_DIR, pipe=True)
    server.port = read_ready_port(server, args.start_timeout)
    return server


def throughput_round(
    server: Server, name: str, args: argparse.Namespace, node: str
) -> dict[str, Any]:
    argv = [node, "wsload.js", "throughput", "--target", name, "--port", str(server.port)]
    argv += ["--pairs", str(args.pairs), "--inflight", str(args.inflight)]
    argv += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    bound = args.seconds + args.warmup + 30
    argv += ["--timeout", str(bound)]
    done = subprocess.run(
        argv,
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=bound + 10,
        check=False,
        preexec_fn=preexec(args.client_cpu, nofile_for(4 * args.pairs)),
    )
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise TargetError(f"wsload failed: {done.stdout[-300:]} {done.stderr[-300:]}") from None
    if "error" in result:
        raise TargetError(f"wsload: {result['error']}")
    if not server.alive():
        raise TargetError("the server died during the round")
    return result


def settled_rss(pid: int, name: str, timeout: float = 15.0) -> int:
    """RSS (KiB) once it stops moving (< 0.5 % over 1 s); PeerJS after a full GC."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        if name == "peerjs":
            os.kill(pid, signal.SIGUSR2)  # global.gc() in peerjs_server.js
        time.sleep(1.0)
        now = rss_kib(pid)
        if abs(now - last) <= 0.005 * now or time.monotonic() > deadline:
            return now
        last = now


def hold_idle(
    children: Children, server: Server, name: str, count: int, args: argparse.Namespace, node: str
) -> tuple[Server, dict[str, Any]]:
    """``count`` idle sockets opened and held by a child: (the child, its progress)."""
    argv = [node, "wsload.js", "idle", "--target", name, "--port", str(server.port)]
    argv += ["--count", str(count), "--timeout", str(args.start_timeout + count / 200)]
    holder = children.spawn(
        f"{name}-idle-{count}",
        argv,
        args.client_cpu,
        nofile=nofile_for(count),
        cwd=NODE_DIR,
        pipe=True,
    )
    started = time.monotonic()
    try:
        opened = read_ready_port(holder, args.start_timeout + count / 200)
    except RuntimeError as exc:
        raise TargetError(f"{exc}; {holder.log_tail(3)}") from None
    return holder, {"opened": opened, "connect_seconds": round(time.monotonic() - started, 2)}


def release(holder: Server) -> dict[str, Any]:
    """Stop the holder (SIGTERM): it reports how many sockets stayed open, and exits."""
    holder.stop()
    out = holder.proc.stdout.read() if holder.proc.stdout is not None else b""
    try:
        report: dict[str, Any] = json.loads((out or b"").strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise TargetError(f"the idle client did not report: {out[-200:]!r}") from None
    return report


def idle_memory(
    children: Children, name: str, args: argparse.Namespace, node: str
) -> dict[str, Any]:
    server = start(children, name, args, node)
    try:
        pid = main_pid(server)
        warm, warm_status = hold_idle(children, server, name, args.warm, args, node)
        release(warm)
        time.sleep(1.0)  # the server notices the closes
        before = settled_rss(pid, name)
        holder, status = hold_idle(children, server, name, args.idle, args, node)
        after = settled_rss(pid, name)
        time.sleep(args.hold)  # a few ping rounds: sockets stay up, memory stays put
        after_hold = settled_rss(pid, name)
        report = release(holder)
        if not server.alive():
            raise TargetError("the server died holding the sockets")
        if report.get("open") != args.idle:
            raise TargetError(f"{report.get('open')} of {args.idle} sockets stayed open: {report}")
    except TargetError as exc:
        raise TargetError(f"{exc}{stop_failed(server)}") from None
    finally:
        server.stop()
    grown = max(after, after_hold) - before
    return {
        "sockets": args.idle,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_after_hold_kib": after_hold,
        "kib_per_socket": grown / args.idle,
        "connect_seconds": status["connect_seconds"],
        "warm": warm_status["opened"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    node = node_exe()
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    idle: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    per_round = args.seconds + args.warmup + 40
    lifetime = 60 + len(names) * (args.rounds * per_round + 2 * args.start_timeout)
    lifetime += 2 * (args.idle / 200 + 60 + args.hold)
    with tempfile.TemporaryDirectory(prefix="signaling_bench.") as tmp:
        children = Children(Path(tmp), lifetime)
        try:
            servers = start_targets(
                names,
                lambda name: start(children, name, args, node),
                errors,
                (TargetError, OSError, RuntimeError),
            )
            live = [n for n in names if n in servers]
            for r in range(args.rounds):
                for name in rotation(live, r):
                    if name in errors:
                        continue
                    try:
                        result = throughput_round(servers[name], name, args, node)
                        rounds[name].append(result)
                        print(
                            f"[round {r + 1}/{args.rounds}] {name:<7} "
                            f"{result['rate'] / 1000:7.1f}k signals/s "
                            f"(generator CPU {result['client_cpu_seconds']:.1f}s)",
                            file=sys.stderr,
                            flush=True,
                        )
                    except (TargetError, subprocess.SubprocessError) as exc:
                        errors[name] = str(exc)
                        print(f"[round {r + 1}] {name}: FAILED - {exc}", file=sys.stderr)
            for server in servers.values():
                server.stop()
            if args.idle > 0:
                for name in [n for n in names if n != "bare" and n not in errors]:
                    try:
                        idle[name] = idle_memory(children, name, args, node)
                        print(
                            f"[idle] {name:<7} {args.idle} sockets: "
                            f"{idle[name]['kib_per_socket']:.2f} KiB each "
                            f"(connected in {idle[name]['connect_seconds']}s)",
                            file=sys.stderr,
                            flush=True,
                        )
                    except (TargetError, OSError, RuntimeError) as exc:
                        errors[f"{name} idle"] = str(exc)
                        print(f"[idle] {name}: FAILED - {exc}", file=sys.stderr)
        finally:
            children.stop_all()
    return report(args, names, rounds, idle, errors)


def report(
    args: argparse.Namespace,
    names: list[str],
    rounds: dict[str, list[dict[str, Any]]],
    idle: dict[str, dict[str, Any]],
    errors: dict[str, str],
) -> dict[str, Any]:
    med = {n: statistics.median(r["rate"] for r in v) if v else None for n, v in rounds.items()}
    kib = {n: v["kib_per_socket"] for n, v in idle.items()}
    ratios = {
        "signals natkit/peerjs": ratio(med.get("natkit"), med.get("peerjs")),
        "signals bare/natkit": ratio(med.get("bare"), med.get("natkit")),
        "signals bare/peerjs": ratio(med.get("bare"), med.get("peerjs")),
        "KiB per socket natkit/peerjs": ratio(kib.get("natkit"), kib.get("peerjs")),
    }
    nk_rate, pj_rate, nk_kib = med.get("natkit"), med.get("peerjs"), kib.get("natkit")
    goals: dict[str, bool | None] = {
        "signals/s above PeerJS": None if nk_rate is None or pj_rate is None else nk_rate > pj_rate,
        f"{args.idle:,} sockets under 10 KiB each": (
            None if nk_kib is None or args.idle < 10_000 else nk_kib < 10.0
        ),
    }
    results: dict[str, Any] = {
        "throughput": {n: {"median": med[n], "rounds": rounds[n]} for n in names if n in rounds},
        "idle": idle,
        "ratios": ratios,
        "goals": goals,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "errors": errors,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    print(
        f"\nWebSocket signaling, median of {args.rounds} rounds x {args.seconds}s, "
        f"{args.pairs} pairs x {args.inflight} in flight; {args.idle:,} idle sockets "
        f"(server CPU {args.server_cpu}, load CPU {args.client_cpu})"
    )
    print(f"{'target':<8}{'signals/s':>12}{'KiB/socket':>12}{'RSS at N (MiB)':>16}")
    for name in names:
        rate, per = med.get(name), idle.get(name)
        shown_rate = "-" if rate is None else f"{rate:,.0f}"
        shown_kib = "-" if per is None else f"{per['kib_per_socket']:.2f}"
        peak = None if per is None else max(per["rss_after_kib"], per["rss_after_hold_kib"])
        shown_rss = "-" if peak is None else f"{peak / 1024:.0f}"
        print(f"{name:<8}{shown_rate:>12}{shown_kib:>12}{shown_rss:>16}")
    print_summary(ratios, goals, errors)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="bare,natkit,peerjs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="seconds before counting")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--inflight", type=int, default=16, help="signals in flight per pair")
    p.add_argument("--idle", type=int, default=10_000, help="idle sockets (0: skip)")
    p.add_argument("--warm", type=int, default=200, help="sockets opened/closed first")
    p.add_argument("--hold", type=float, default=12.0, help="seconds to hold them")
    p.add_argument("--start-timeout", type=float, default=20.0)
    p.add_argument("--json", action="store_true")
    add_cpu_arguments(p)
    args = p.parse_args(argv)
    results = run(args)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
