"""What the benchmark scripts share: free ports, child processes in their own session
(pinned, time-limited, killed as a group), their CPU time, and ratios.

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and
they ``import harness``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

HOST = "127.0.0.1"

T = TypeVar("T")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def proc_stat_fields(pid: str) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def session_pids(session: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = proc_stat_fields(entry.name)
            if fields is not None and int(fields[3]) == session:  # stat(5) field 6
                pids.append(int(entry.name))
    return pids


def session_cpu_seconds(session: int) -> float:
    """user+system CPU seconds of the live processes of a session (Linux /proc)."""
    ticks = 0
    for pid in session_pids(session):
        fields = proc_stat_fields(str(pid))
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def preexec(cpu: int | None, nofile: int | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning the child to ``cpu`` and setting its RLIMIT_NOFILE."""
    if cpu is None and nofile is None:
        return None

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return setup


@dataclass
class Server:
    """A child process in its own session (killed as a group)."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def cpu_seconds(self) -> float:
        return session_cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM if self.alive() else signal.SIGKILL)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=3)


def build_c(source: Path) -> Path:
    """``source`` compiled with gcc -O2 into ``benchmarks/.build`` unless up to date."""
    build_dir = source.parent / ".build"
    binary = build_dir / source.stem
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    build_dir.mkdir(exist_ok=True)
    tmp = build_dir / f"{source.stem}.{os.getpid()}.tmp"
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"gcc failed:\n{result.stderr}")
    tmp.replace(binary)
    return binary


class Children:
    """The children of one benchmark run: each in its own session, bounded in time by
    ``timeout`` (when installed), output to ``<workdir>/<name>.log``; ``stop_all`` at the end."""

    def __init__(self, workdir: Path, lifetime: float) -> None:
        self.workdir = workdir
        self.lifetime = lifetime
        self.servers: list[Server] = []
        self.timeout_bin = shutil.which("timeout")

    def wrap(self, argv: Sequence[str], lifetime: float | None = None) -> list[str]:
        """``argv`` under ``timeout``: a hard upper bound on the child's life."""
        if self.timeout_bin:
            return [self.timeout_bin, "-k", "5", f"{lifetime or self.lifetime:.0f}", *argv]
        return list(argv)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        cpu: int | None,
        *,
        nofile: int | None = None,
        cwd: Path | None = None,
        pipe: bool = False,
        port: int = 0,
    ) -> Server:
        """Start ``argv`` pinned to ``cpu``; stderr (and stdout unless ``pipe``) to its log."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                self.wrap(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else log,
                stderr=log,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=preexec(cpu, nofile),
            )
        server = Server(name, proc, port, log_path)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def read_ready_port(server: Server, timeout: float) -> int:
    """The port of a child (started with ``pipe=True``) that prints ``READY <port>`` once
    bound; raises ``RuntimeError`` if it does not within ``timeout``."""
    stdout = server.proc.stdout
    if stdout is None:
        raise RuntimeError(f"{server.name}: started without pipe=True")
    os.set_blocking(stdout.fileno(), False)
    line = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.alive():
        chunk = stdout.readline()
        if chunk:
            line += chunk
            if line.endswith(b"\n"):
                break
        else:
            time.sleep(0.02)
    match = re.match(rb"READY (\d+)", line)
    if not match:
        raise RuntimeError(f"{server.name} did not report READY (got {line!r})")
    return int(match.group(1))


def stop_failed(server: Server | None) -> str:
    """Stop a server that failed; the tail of its log, indented, to add to the error."""
    if server is None:
        return ""
    tail = server.log_tail()
    server.stop()
    if not tail:
        return ""
    return "\n    --- server output (tail) ---\n    " + tail.replace("\n", "\n    ")


def start_targets(
    names: list[str],
    start: Callable[[str], T],
    errors: dict[str, str],
    expected: tuple[type[Exception], ...],
) -> dict[str, T]:
    """``start(name)`` for each target; a target that fails with one of ``expected`` is
    reported and its error kept in ``errors`` (the others still run)."""
    started: dict[str, T] = {}
    for name in names:
        try:
            started[name] = start(name)
            print(f"[start] {name}: ok", file=sys.stderr)
        except expected as exc:
            errors[name] = str(exc)
            print(f"[start] {name}: FAILED - {exc}", file=sys.stderr)
    return started


def rotation(names: list[str], round_number: int) -> list[str]:
    """``names`` starting one later each round: no target always goes first."""
    if not names:
        return []
    shift = round_number % len(names)
    return names[shift:] + names[:shift]


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def add_cpu_arguments(parser: argparse.ArgumentParser, client: str = "--client-cpu") -> None:
    """``--server-cpu`` and the load's CPU flag: 1 and 0 on a machine with two or more."""
    two = (os.cpu_count() or 1) >= 2
    parser.add_argument("--server-cpu", type=int, default=1 if two else None)
    parser.add_argument(client, type=int, default=0 if two else None)


def print_summary(
    ratios: dict[str, float | None], goals: dict[str, bool | None], errors: dict[str, str]
) -> None:
    """The ratios measured, each goal met or not (None: not measured), then the errors."""
    print()
    width = max((len(key) for key in ratios), default=0)
    for key, value in ratios.items():
        if value is not None:
            print(f"  {key:<{width}} {value:6.2f}")
    for goal, met in goals.items():
        if met is not None:
            print(f"  goal {goal}: {'met' if met else 'NOT met'}")
    for name, error in errors.items():
        print(f"\n{name}: {error}")
