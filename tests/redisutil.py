"""Real Redis servers for the test suite: a standalone ``redis-server`` and a 3-master
Redis Cluster, all on free loopback ports, with nothing written to disk but logs.

Everything listens on 127.0.0.1 only. Processes are stopped by :meth:`RedisServer.stop` /
:meth:`RedisCluster.stop` (or the context managers); as a last resort a server launched from
the main thread gets SIGTERM from the kernel when the test process dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import redis

HOST = "127.0.0.1"
INSTALL_HINT = "install it with: sudo bash scripts/install-system-deps.sh redis-server"
CLUSTER_SLOTS = 16384
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CLUSTER_TIMEOUT = 30.0
_BIND_ATTEMPTS = 5
_POLL_INTERVAL = 0.02
_PR_SET_PDEATHSIG = 1


class RedisNotInstalledError(RuntimeError):
    """``redis-server`` (or ``redis-cli``) is not on PATH."""


class RedisStartError(RuntimeError):
    """A Redis server or cluster did not come up."""


def require_binary(name: str) -> str:
    """The full path of the Redis tool ``name``, or :class:`RedisNotInstalledError`."""
    path = shutil.which(name)
    if path is None:
        raise RedisNotInstalledError(
            f"{name} is not installed (Debian package redis-server); {INSTALL_HINT}"
        )
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now. All sockets are held open
    until every port is chosen, so the ports differ from each other."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


# Loaded here, not in the forked child (which should do as little as possible).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before ``exec``: get SIGTERM when the launching thread dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _client(port: int, timeout: float = 2.0) -> redis.Redis:
    """A short-lived synchronous client for one node (use it as a context manager)."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )


def _command(port: int, *args: str) -> Any:
    """Send one command to the node on ``port`` and return its reply."""
    with _client(port) as client:
        return client.execute_command(*args)


def cluster_info(port: int) -> dict[str, str]:
    """``CLUSTER INFO`` of the node on ``port`` as a dict of strings."""
    reply = _command(port, "CLUSTER", "INFO")
    if isinstance(reply, dict):  # redis-py may already have parsed it
        return {str(k): str(v) for k, v in reply.items()}
    lines = (line.strip() for line in str(reply).splitlines())
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` (which may raise ``redis.RedisError``) until it is true."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        time.sleep(_POLL_INTERVAL)
    raise RedisStartError(f"timed out after {timeout:.0f}s waiting for {what}: {last_error!r}")


class _Started:
    """``with X() as x``: ``start()`` on entry, ``stop()`` on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_Started):
    """One ``redis-server`` process on 127.0.0.1, configured only on the command line:
    no persistence, protected mode, its working directory and log in a temporary directory.

    ``start()`` picks a free port (unless ``port`` is given) and retries with another one if
    it turns out to be taken; ``restart()`` comes back on the same port so clients reconnect.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: Path | None = None,
        cluster: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``port``: a fixed port (default: a free one, chosen by ``start()``).
        ``base_dir``: where to make the working directory (kept, e.g. pytest's
        ``tmp_path_factory``); default a fresh temporary directory removed by ``stop()``.
        ``cluster``: run as a cluster node (``--cluster-enabled yes``, own bus port).
        ``extra_args``: more ``--option value`` arguments for ``redis-server``."""
        self._fixed_port = port is not None
        self._port = port
        self._cluster = cluster
        self._bus_port: int | None = None
        self._base_dir = base_dir
        self._extra_args = tuple(extra_args)
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    # -- properties ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Always 127.0.0.1."""
        return HOST

    @property
    def port(self) -> int:
        """The port the server listens (or listened) on."""
        if self._port is None:
            raise RuntimeError("RedisServer has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while running, else ``None``."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def directory(self) -> Path:
        """The working directory (holds ``redis.log`` and, for a cluster node, nodes.conf)."""
        if self._dir is None:
            raise RuntimeError("RedisServer has not been started")
        return self._dir

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.directory / "redis.log"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Launch the server and wait until it answers PING. Returns ``self``. Without a
        fixed port, a port found taken at launch is replaced by another one, a few times."""
        if self.running:
            raise RuntimeError(f"redis-server already running on port {self._port}")
        binary = require_binary("redis-server")
        self._make_dir()
        try:
            self._launch_retrying(binary, new_ports=not self._fixed_port)
        except BaseException:
            self._remove_dir()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the server, wait for it (SIGKILL after a timeout) and remove its own
        temporary directory. Safe to call twice."""
        self._terminate()
        self._remove_dir()

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port, so clients can reconnect.
        Data is lost: nothing is persisted. Also starts a stopped server."""
        if self._port is None:
            return self.start()
        self._terminate()
        binary = require_binary("redis-server")
        self._make_dir()
        self._launch_retrying(binary, new_ports=False)
        return self

    def flushall(self) -> None:
        """Delete every key (``FLUSHALL SYNC``)."""
        _command(self.port, "FLUSHALL", "SYNC")

    def ping(self) -> bool:
        """Whether the server answers PING."""
        with _client(self.port) as client:
            return bool(client.ping())

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<RedisServer {HOST}:{self._port} {state}>"

    # -- internals ----------------------------------------------------------------------

    def _launch_retrying(self, binary: str, *, new_ports: bool) -> None:
        """Launch; when the log says the address is in use, try again (on fresh ports if
        ``new_ports``, else on the same ones after a pause) up to a few times."""
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            if new_ports or self._port is None:
                self._pick_ports()
            elif self._cluster and self._bus_port is None:
                (self._bus_port,) = free_ports(1)
            try:
                self._launch(binary)
            except RedisStartError:
                if attempt == _BIND_ATTEMPTS or not self._address_in_use():
                    raise
                if not new_ports:
                    time.sleep(0.2 * attempt)
            else:
                return

    def _pick_ports(self) -> None:
        """Choose a fresh client port (and cluster bus port for a cluster node)."""
        if self._cluster:
            self._port, self._bus_port = free_ports(2)
        else:
            (self._port,) = free_ports(1)

    def _command_line(self, binary: str) -> list[str]:
        """The full ``redis-server`` command line: no config file."""
        args = [
            binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self._cluster:
            # An explicit bus port: the default (port + 10000) may be taken, or above 65535
            # for ports from the ephemeral range.
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{self.port}.conf",
                "--cluster-node-timeout", "5000",
                "--cluster-port", str(self._bus_port),
            ]  # fmt: skip
        return [*args, *self._extra_args]

    def _launch(self, binary: str) -> None:
        """Start the process and wait for PING; on failure kill it and raise."""
        self._log = self.log_path.open("ab")
        self._log_offset = self._log.tell()
        self._proc = subprocess.Popen(
            self._command_line(binary),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            preexec_fn=_die_with_parent if _on_main_thread() else None,
        )
        try:
            _wait_until(self._ready, START_TIMEOUT, f"redis-server on port {self.port}")
        except BaseException as exc:
            code = self._proc.poll()
            self._terminate()
            if isinstance(exc, RedisStartError):
                status = "running" if code is None else f"exited with {code}"
                raise RedisStartError(
                    f"redis-server on port {self.port} did not start ({status}); "
                    f"log {self.log_path}:\n{self._log_tail()}"
                ) from exc
            raise

    def _ready(self) -> bool:
        """PING succeeds; raises if the process has already exited."""
        if self._proc is None or self._proc.poll() is not None:
            raise RedisStartError("redis-server exited")
        return self.ping()

    def _terminate(self) -> None:
        """SIGTERM, wait, SIGKILL fallback; reap the process and close the log."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _make_dir(self) -> None:
        """Create the working directory if there is none."""
        if self._dir is None:
            prefix = f"redis-{'cluster-node' if self._cluster else 'server'}-"
            self._dir = Path(tempfile.mkdtemp(prefix=prefix, dir=self._base_dir))

    def _remove_dir(self) -> None:
        """Remove the working directory unless it lives in a caller's ``base_dir`` (then it
        stays, log included, and a later start reuses it)."""
        if self._dir is not None and self._base_dir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _log_tail(self, lines: int = 20) -> str:
        """The last lines the current (or last) launch wrote to the log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _address_in_use(self) -> bool:
        """Whether the last launch failed on a taken port (so another try may work)."""
        return "Address already in use" in self._log_tail(lines=1000)


def _on_main_thread() -> bool:
    """PR_SET_PDEATHSIG fires when the launching *thread* exits, so use it only from the
    main thread (and only on Linux)."""
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


class RedisCluster(_Started):
    """A real Redis Cluster of three masters (no replicas) on 127.0.0.1, created with
    ``redis-cli --cluster create``. Nodes have their own directories; if anything fails
    midway, every process started so far is stopped."""

    def __init__(self, *, masters: int = 3, base_dir: Path | None = None) -> None:
        """``base_dir`` as for :class:`RedisServer`."""
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self._masters = masters
        self._base_dir = base_dir
        self._servers: list[RedisServer] = []
        self.startup_seconds: float | None = None

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every master."""
        return [(server.host, server.port) for server in self._servers]

    @property
    def servers(self) -> list[RedisServer]:
        """The node processes."""
        return list(self._servers)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port of the first node>`` (a startup node for clients)."""
        if not self._servers:
            raise RuntimeError("RedisCluster has not been started")
        return f"redis://{HOST}:{self._servers[0].port}"

    @property
    def running(self) -> bool:
        """Whether every node process is alive."""
        return bool(self._servers) and all(server.running for server in self._servers)

    def start(self) -> Self:
        """Start the nodes, create the cluster and wait until every node reports
        ``cluster_state:ok`` with all slots assigned. Returns ``self``."""
        if self._servers:
            raise RuntimeError("RedisCluster already started")
        began = time.monotonic()
        cli = require_binary("redis-cli")
        require_binary("redis-server")
        try:
            for _ in range(self._masters):
                server = RedisServer(base_dir=self._base_dir, cluster=True)
                self._servers.append(server)
                server.start()
            self._create(cli)
            _wait_until(self._healthy, CLUSTER_TIMEOUT, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every node (safe to call twice)."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.stop()

    def flushall(self) -> None:
        """``FLUSHALL SYNC`` on every master."""
        for server in self._servers:
            server.flushall()

    def cluster_info(self) -> list[dict[str, str]]:
        """``CLUSTER INFO`` of every node."""
        return [cluster_info(server.port) for server in self._servers]

    def __repr__(self) -> str:
        return f"<RedisCluster {self.nodes} {'running' if self.running else 'stopped'}>"

    def _create(self, cli: str) -> None:
        """``redis-cli --cluster create`` over the started nodes."""
        command = [
            cli,
            "--cluster", "create",
            *(f"{host}:{port}" for host, port in self.nodes),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CLUSTER_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RedisStartError(f"{' '.join(command)} timed out: {exc.stdout!r}") from exc
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise RedisStartError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def _healthy(self) -> bool:
        """Every node: state ok, all slots assigned, and it knows all the others."""
        for info in self.cluster_info():
            if (
                info.get("cluster_state") != "ok"
                or info.get("cluster_slots_assigned") != str(CLUSTER_SLOTS)
                or info.get("cluster_known_nodes") != str(self._masters)
            ):
                return False
        return True
