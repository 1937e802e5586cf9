"""The rendezvous benchmarks of issue #4 in one command: the trackers, then signaling.

* ``trackers``  (``rendezvous_trackers.py``): HTTP announces/s against the bare aiohttp
  ceiling and opentracker, UDP (BEP 15) announces/s against opentracker;
* ``signaling`` (``rendezvous_signaling.py``): WebSocket signals relayed/s and memory per
  idle WebSocket (10,000 held) against the PeerJS server.

Every figure is a ratio against a reference measured in the same run. Run::

    .venv/bin/python benchmarks/rendezvous.py                       # both parts, ~3 min
    .venv/bin/python benchmarks/rendezvous.py trackers --rounds 5   # one part, its flags
    .venv/bin/python benchmarks/rendezvous.py signaling --help
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder is first on sys.path, where this file would shadow
# the ``rendezvous`` package the parts import: the repository goes first, the folder last.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
sys.path.append(str(HERE))

import rendezvous_signaling  # noqa: E402
import rendezvous_trackers  # noqa: E402

PARTS: dict[str, Callable[[list[str]], int]] = {
    "trackers": rendezvous_trackers.main,
    "signaling": rendezvous_signaling.main,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in PARTS:
        return PARTS[args[0]](args[1:])
    if args:
        print(__doc__ if args[0] in ("-h", "--help") else f"unknown part {args[0]!r}")
        return 0 if args[0] in ("-h", "--help") else 2
    return max(part([]) for part in PARTS.values())


if __name__ == "__main__":
    sys.exit(main())
