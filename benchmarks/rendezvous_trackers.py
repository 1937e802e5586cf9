"""Rendezvous tracker throughput: HTTP and UDP announces per second, in one run.

HTTP (``wrk``, one thread, 64 connections, every request a new random peer_id and port on
one torrent, ``numwant=30``, compact) against:

* ``bare``       - aiohttp answering a constant body (``bare_aiohttp.py``): the ceiling of
                   an aiohttp server on this machine;
* ``natkit``     - ``natkit rendezvous`` on its memory store, ``--rate-limit 0``: HTTP on
                   the API port (its front door hands tracker requests to the lean
                   tracker listener, behind the API's access rules) and, as
                   ``natkit-port``, on ``--http-tracker`` (the same listener on its own
                   port);
* ``opentracker``- the C tracker (Debian package), the reference tracker.

UDP (``udp_tracker_loadgen.c``: 16 sockets x 8 announces in flight, BEP 15 connect then
announces with random peer_ids) against natkit's ``--udp-tracker`` and opentracker.

Every server is pinned to ``--server-cpu``, the load generators to ``--client-cpu``; each
target must first answer one announce correctly; rounds are interleaved; medians and the
ratios natkit/bare and natkit/opentracker are printed. Goals (issue #4): HTTP announces >=
0.8x the bare aiohttp ceiling, UDP announces >= 0.5x opentracker.

Run::

    .venv/bin/python benchmarks/rendezvous_trackers.py              # ~1.5 min
    .venv/bin/python benchmarks/rendezvous_trackers.py --rounds 5 --seconds 5 --json

``benchmarks/rendezvous.py`` runs this and the signaling benchmark in one command.

All traffic stays on loopback; every child is bounded by ``timeout`` and killed at exit.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
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
    print_summary,
    ratio,
    read_ready_port,
    rotation,
    start_targets,
)

from rendezvous.bittorrent import bencode  # noqa: E402

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
INFO_HASH = bytes(range(100, 120))
WRK_SCRIPT = """
math.randomseed(os.time())
request = function()
  local peer = "-WR0001-"
  for i = 1, 12 do peer = peer .. string.format("%%%02X", math.random(0, 255)) end
  local port = math.random(1024, 65535)
  return wrk.format("GET", "/announce?info_hash=INFO_HASH&peer_id=" .. peer ..
    "&port=" .. port .. "&uploaded=0&downloaded=0&left=100&compact=1&numwant=30")
end
"""


OWN_PORT = "natkit-port"  # natkit's --http-tracker listener (its own port)


WRK_PEER_ID = "-WR0001-" + "%7F" * 12  # shaped as the wrk script's peer ids


class TargetError(Exception):
    pass


def quoted(raw: bytes) -> str:
    return "".join(f"%{b:02X}" for b in raw)


def wait_http(port: int, path: str, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=1) as response:
                return bytes(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise TargetError(f"no HTTP answer on port {port} within {timeout}s") from None
            time.sleep(0.1)


def check_announce(port: int, timeout: float, peer_id: str = "") -> None:
    """One announce must get a real answer (an ``interval``, no ``failure reason``);
    ``peer_id``: as the wrk script writes it (default: a seeder of its own)."""
    peer = peer_id or quoted(b"-CHECK0-" + bytes(12))
    path = (
        f"/announce?info_hash={quoted(INFO_HASH)}&peer_id={peer}"
        "&port=6881&uploaded=0&downloaded=0&left=0&compact=1&numwant=30"
    )
    answer: Any = bencode.decode(wait_http(port, path, timeout))
    if not isinstance(answer, dict) or b"interval" not in answer:
        raise TargetError(f"announce answered {answer!r}")


def leechers(port: int) -> int:
    """The torrent's leechers by the target's own scrape (every wrk announce adds one)."""
    answer: Any = bencode.decode(wait_http(port, f"/scrape?info_hash={quoted(INFO_HASH)}", 5))
    try:
        return int(answer[b"files"][INFO_HASH][b"incomplete"])
    except (KeyError, TypeError, ValueError):
        raise TargetError(f"scrape answered {answer!r}") from None


def counted_round(port: int, args: argparse.Namespace, script: Path) -> dict[str, Any]:
    """A wrk round that must have registered its peers: a target answering failures
    (a malformed request, say) would otherwise look fast."""
    before = leechers(port)
    result = wrk_round(port, args, script)
    added = leechers(port) - before
    requests = result["rate"] * args.seconds
    if added < 0.5 * requests:
        raise TargetError(f"{requests:.0f} announces added only {added} peers")
    result["peers_added"] = added
    return result


def start(
    children: Children, name: str, args: argparse.Namespace, work: Path
) -> tuple[Server, int]:
    """The started target and its UDP tracker port."""
    tcp, udp = free_udp_port(), free_udp_port()  # a port free for UDP and TCP alike
    if name == "bare":
        server = children.spawn(
            name, [str(VENV_PYTHON), str(HERE / "bare_aiohttp.py")], args.server_cpu, pipe=True
        )
        server.port = read_ready_port(server, args.start_timeout)
    elif name == "natkit":
        argv = [str(VENV_PYTHON), "-m", "natkit", "rendezvous", "--host", HOST, "--port", str(tcp)]
        argv += ["--rate-limit", "0", "--swarm-capacity", "0", "--log-level", "warning"]
        argv += ["--udp-tracker", f"{HOST}:{udp}", "--http-tracker", f"{HOST}:{udp}"]
        server = children.spawn(name, argv, args.server_cpu, cwd=REPO)
        server.port = tcp
        check_announce(udp, args.start_timeout)  # the tracker's own port (TCP, same number)
    elif name == "opentracker":
        exe = shutil.which("opentracker")
        if exe is None:
            raise TargetError("opentracker not found (apt-get install opentracker)")
        root = work / "opentracker"
        root.mkdir(exist_ok=True)
        # Debian builds opentracker with a whitelist: allow the benchmark's torrents.
        whitelist = root / "whitelist"
        whitelist.write_text(INFO_HASH.hex() + "\n")
        argv = [exe, "-i", HOST, "-p", str(tcp), "-P", str(udp), "-d", str(root), "-u", "nobody"]
        argv += ["-w", "whitelist"]  # opentracker chroots to -d first
        server = children.spawn(name, argv, args.server_cpu)
        server.port = tcp
    else:
        raise TargetError(f"unknown target {name}")
    check_announce(server.port, args.start_timeout)
    return server, udp


def wrk_round(port: int, args: argparse.Namespace, script: Path) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", str(script)]
    argv.append(f"http://{HOST}:{port}/")
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=args.seconds + 30,
        check=False,
        preexec_fn=preexec(args.client_cpu),
    )
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if done.returncode != 0 or not found:
        raise TargetError(f"wrk failed: {done.stdout[-300:]} {done.stderr[-300:]}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    errors = re.search(r"Socket errors: (.*)", done.stdout)
    return {
        "rate": float(found.group(1)),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def udp_round(port: int, args: argparse.Namespace, generator: Path) -> dict[str, Any]:
    argv = [str(generator), "-d", str(args.seconds), "-W", "1", "-s", "16", "-w", "8"]
    argv += ["-i", INFO_HASH.hex()]
    if args.client_cpu is not None:
        argv += ["-c", str(args.client_cpu)]
    argv.append(f"{HOST}:{port}")
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=args.seconds + 30, check=False
    )
    if done.returncode != 0:
        raise TargetError(f"udp_tracker_loadgen failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    generator = build_c(HERE / "udp_tracker_loadgen.c")
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    http: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    udp: dict[str, list[dict[str, Any]]] = {n: [] for n in names if n != "bare"}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rendezvous_bench.") as tmp:
        work = Path(tmp)
        script = work / "announce.lua"
        # A plain Lua string (not a format): the escapes go in as they are.
        script.write_text(WRK_SCRIPT.replace("INFO_HASH", quoted(INFO_HASH)))
        children = Children(work, 60 + len(names) * args.rounds * (2 * args.seconds + 40))
        try:
            servers = start_targets(
                names,
                lambda name: start(children, name, args, work),
                errors,
                (TargetError, OSError, RuntimeError),
            )
            live = [n for n in names if n in servers]
            for r in range(args.rounds):
                for name in rotation(live, r):
                    server, udp_port = servers[name]
                    try:
                        if name == "natkit":
                            result = counted_round(server.port, args, script)
                        else:
                            if name == "opentracker":  # keys peers by address, not id:
                                check_announce(server.port, 5, WRK_PEER_ID)  # no count
                            result = wrk_round(server.port, args, script)
                        http[name].append(result)
                        line = f"[round {r + 1}/{args.rounds}] {name:<12} "
                        line += f"HTTP {result['rate'] / 1000:6.1f}k/s"
                        if name == "natkit":  # and on --http-tracker, its own port
                            own = counted_round(udp_port, args, script)
                            http.setdefault(OWN_PORT, []).append(own)
                            line += f" (own port {own['rate'] / 1000:6.1f}k/s)"
                        if name in udp:
                            u = udp_round(udp_port, args, generator)
                            udp[name].append(u)
                            line += f"  UDP {u['rate'] / 1000:6.1f}k/s (errors {u['errors']})"
                        print(line, file=sys.stderr, flush=True)
                    except (TargetError, subprocess.SubprocessError, ValueError) as exc:
                        errors[name] = str(exc)
                        print(f"[round {r + 1}] {name}: FAILED - {exc}", file=sys.stderr)
        finally:
            children.stop_all()

    def median(rounds: list[dict[str, Any]]) -> float | None:
        return statistics.median(r["rate"] for r in rounds) if rounds else None

    http_med = {n: median(v) for n, v in http.items()}
    udp_med = {n: median(v) for n, v in udp.items()}
    ratios = {
        "http natkit/bare": ratio(http_med.get("natkit"), http_med.get("bare")),
        f"http {OWN_PORT}/bare": ratio(http_med.get(OWN_PORT), http_med.get("bare")),
        f"http {OWN_PORT}/opentracker": ratio(http_med.get(OWN_PORT), http_med.get("opentracker")),
        "http natkit/opentracker": ratio(http_med.get("natkit"), http_med.get("opentracker")),
        "udp natkit/opentracker": ratio(udp_med.get("natkit"), udp_med.get("opentracker")),
    }
    results: dict[str, Any] = {
        "http": {n: {"median": http_med[n], "rounds": http[n]} for n in http},
        "udp": {n: {"median": udp_med[n], "rounds": udp[n]} for n in udp},
        "ratios": ratios,
        "errors": errors,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    print(
        f"\nTracker announces/s, median of {args.rounds} rounds x {args.seconds}s "
        f"(server CPU {args.server_cpu}, load CPU {args.client_cpu})"
    )
    print(f"{'target':<12}{'HTTP/s':>10}{'UDP/s':>10}")
    for name in [*names, OWN_PORT] if OWN_PORT in http_med else names:
        h, udp_rate = http_med.get(name), udp_med.get(name)
        shown_h = "-" if h is None else f"{h:,.0f}"
        shown_u = "-" if udp_rate is None else f"{udp_rate:,.0f}"
        print(f"{name:<12}{shown_h:>10}{shown_u:>10}")
    print_summary(ratios, goals(ratios), errors)
    return results


def goals(ratios: dict[str, float | None]) -> dict[str, bool | None]:
    """Issue #4's goals, on the ratios (None: not measured)."""

    def at_least(key: str, goal: float) -> bool | None:
        value = ratios[key]
        return None if value is None else value >= goal

    return {
        "HTTP >= 0.8x bare aiohttp, /announce on the API port": at_least("http natkit/bare", 0.8),
        "HTTP >= 0.8x bare aiohttp, --http-tracker (own port)": at_least(
            f"http {OWN_PORT}/bare", 0.8
        ),
        "UDP >= 0.5x opentracker": at_least("udp natkit/opentracker", 0.5),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="bare,natkit,opentracker")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=64, help="wrk -c")
    p.add_argument("--start-timeout", type=float, default=15.0)
    p.add_argument("--json", action="store_true")
    add_cpu_arguments(p)
    args = p.parse_args(argv)
    results = run(args)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
