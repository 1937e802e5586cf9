"""STUN servers the tests start: waiting until one answers, and coturn's ``turnserver``
with the options every test wants (no CLI, TLS or DTLS; its files in a temporary
directory), stopped when the block ends."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from aioice import stun

Launch = Callable[[Sequence[str]], "subprocess.Popen[bytes]"]


def binding_request() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    return bytes(message)


def wait_for_stun(
    server: tuple[str, int],
    process: subprocess.Popen[bytes],
    *,
    open_socket: Callable[[], socket.socket] | None = None,
    deadline: float = 15.0,
) -> None:
    """Until ``server`` answers a Binding request (from a socket ``open_socket`` makes:
    one in a test's network namespace, say); RuntimeError if ``process`` exits first or
    nothing answers within ``deadline`` seconds."""
    sock = (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if open_socket is None else open_socket()
    )
    end = time.monotonic() + deadline
    with sock:
        sock.settimeout(0.2)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited ({process.returncode}) before serving")
            sock.sendto(binding_request(), server)
            try:
                sock.recvfrom(2048)
                return
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(
                        f"no STUN answer from {server} within {deadline} s"
                    ) from None


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def turnserver_binary() -> str:
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("turnserver is not installed (Debian package coturn)")
    return binary


@contextmanager
def coturn(
    *args: str,
    server: tuple[str, int],
    launch: Launch | None = None,
    open_socket: Callable[[], socket.socket] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``turnserver ARGS`` (the caller adds the listening IPs and port), once ``server``
    answers STUN. ``launch`` starts the process and ``open_socket`` makes the socket that
    waits for it (defaults: here; a NAT lab's public namespace, say)."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [turnserver_binary(), "-n", "--no-cli", "--no-tls", "--no-dtls", *args]
        argv += ["--no-stdout-log", f"--log-file={Path(tmp) / 'turn.log'}"]
        argv += [f"--pidfile={Path(tmp) / 'turn.pid'}", f"--db={Path(tmp) / 'turndb'}"]
        if launch is None:
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            process = launch(argv)
        try:
            wait_for_stun(server, process, open_socket=open_socket)
            yield process
        finally:
            stop(process)
