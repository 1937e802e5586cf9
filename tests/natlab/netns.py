"""Network namespaces for the lab: create, run in, open sockets in, and clean up.

Every name this module creates carries the creating process's pid (``nkl<pid>-...`` for
namespaces, ``nkv<pid>...`` for interfaces while they pass through the root namespace), so
a later run can tell a killed run's leftovers (its pid is gone) from a live run's -- under
pytest-xdist several run at once -- and remove them (``remove_stale``).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
PREFIX = "nkl"  # namespaces: nkl<pid>-<n>-<role>
VETH_PREFIX = "nkv"  # root-namespace interface names: nkv<pid><n>a / b (at most 15 chars)
TOOLS = ("ip", "bridge", "iptables", "nft", "conntrack", "sysctl")

_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


class LabError(Exception):
    """A lab command failed; the message holds the command and its error output."""


def missing_requirements() -> str | None:
    """Why the lab cannot run here (not root, a tool missing), or None."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, netfilter)"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        tools = ", ".join(absent)
        return f"the NAT lab needs {tools} (apt-get install iproute2 iptables nftables conntrack)"
    return None


def sh(*argv: str, stdin: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command (no shell); its stdout. ``LabError`` naming it when it fails."""
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def unique(role: str) -> str:
    """A fresh namespace name for ``role`` (letters and digits, short)."""
    return f"{PREFIX}{os.getpid()}-{next(_counter)}-{role}"


def veth_names() -> tuple[str, str]:
    """Two fresh interface names for a veth pair created in the root namespace."""
    n = next(_counter)
    base = f"{VETH_PREFIX}{os.getpid() % 100000}x{n}"
    return base + "a", base + "b"


class Netns:
    """One network namespace (created by ``create``, removed by ``delete``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, role: str) -> Netns:
        ns = cls(unique(role))
        sh("ip", "netns", "add", ns.name)
        ns.ip("link", "set", "lo", "up")
        return ns

    def delete(self) -> None:
        sh("ip", "netns", "delete", self.name, check=False)

    def ip(self, *argv: str) -> str:
        return sh("ip", "-n", self.name, *argv)

    def run(
        self, *argv: str, stdin: str | None = None, check: bool = True, timeout: float = 30
    ) -> str:
        """``argv`` inside this namespace (``ip netns exec``), bounded by ``timeout``."""
        return sh(
            "ip", "netns", "exec", self.name, *argv, stdin=stdin, check=check, timeout=timeout
        )

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """A process started inside this namespace (the caller ends it)."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)  # type: ignore[call-overload]

    def call(self, function: Callable[[], T]) -> T:
        """``function()`` run on a thread that has entered this namespace: sockets it
        opens live here (and stay here when used from any thread)."""
        outcome: list[T | BaseException] = []

        def enter_and_call() -> None:
            try:
                fd = os.open(os.path.join(NETNS_DIR, self.name), os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        code = ctypes.get_errno()
                        raise OSError(code, f"setns {self.name}: {os.strerror(code)}")
                    outcome.append(function())
                finally:
                    os.close(fd)
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)

        thread = threading.Thread(target=enter_and_call, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        return self.call(lambda: socket.socket(family, kind))

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces and root-namespace interfaces of lab runs whose process is
    gone (a run that was killed before its teardown); the names removed."""
    removed: list[str] = []
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    for name in names:
        match = re.fullmatch(rf"{PREFIX}(\d+)-.*", name)
        if match and not _alive(int(match.group(1))):
            sh("ip", "netns", "delete", name, check=False)
            removed.append(name)
    for line in sh("ip", "-o", "link", "show").splitlines():
        match = re.match(rf"\d+: ({VETH_PREFIX}(\d+)x\d+[ab])[@:]", line)
        if match and not any(_alive(pid) for pid in _pids_ending(int(match.group(2)))):
            sh("ip", "link", "delete", match.group(1), check=False)
            removed.append(match.group(1))
    return removed


def _pids_ending(suffix: int) -> list[int]:
    """Live pids whose last five digits are ``suffix`` (interface names keep only those)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) % 100000 == suffix]


__all__ = [
    "CLONE_NEWNET",
    "LabError",
    "Netns",
    "missing_requirements",
    "remove_stale",
    "sh",
    "unique",
    "veth_names",
]
