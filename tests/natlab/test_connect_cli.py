"""``natkit connect`` (the README's two-terminal demo) between two hosts behind lab NATs:
one listens and prints its peer id, the other connects to it, and a line typed on each
side is printed on the other."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.natlab import Lab, Nat
from tests.natlab.conftest import require_lab
from tests.natlab.servers import natkit_relay, redis_server, rendezvous_server

REPO = Path(__file__).resolve().parents[2]
SECRET = "natlab-turn-secret"


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float = 20) -> str:
    """The first line of ``process``'s output matching ``pattern``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r}; got: {''.join(seen)!r}")


def test_two_terminals_exchange_lines_across_nats() -> None:
    require_lab()
    with (
        Lab(nats={"home": Nat(), "office": Nat()}, hosts={"ann": "home", "ben": "office"}) as lab,
        redis_server(lab) as store,
        rendezvous_server(lab, store, turn_secret=SECRET) as url,
        natkit_relay(lab) as server,
    ):
        flags = ["--rendezvous", url, "--stun", f"{server[0]}:{server[1]}"]

        def natkit_connect(host: str, *args: str) -> subprocess.Popen[str]:
            return lab.host(host).ns.popen(  # type: ignore[return-value]
                [sys.executable, "-m", "natkit", "connect", *args, *flags],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                cwd=REPO,
            )

        listener = natkit_connect("ann")
        dialler = None
        try:
            peer_id = read_until(listener, r"your peer id: ").split(": ")[1].strip()
            dialler = natkit_connect("ben", peer_id)
            assert "(direct)" in read_until(dialler, r"^connected to ")
            assert "(direct)" in read_until(listener, r"^connected to ")
            assert dialler.stdin is not None
            assert listener.stdin is not None
            dialler.stdin.write("hello from ben\n")
            dialler.stdin.flush()
            assert read_until(listener, r"^peer> ").strip() == "peer> hello from ben"
            listener.stdin.write("hi ben, ann here\n")
            listener.stdin.flush()
            assert read_until(dialler, r"^peer> ").strip() == "peer> hi ben, ann here"
            dialler.stdin.close()  # Ctrl-D: the dialler ends its side
            assert dialler.wait(15) == 0
        finally:
            for process in (listener, dialler):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
