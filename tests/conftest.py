"""Suite-wide fixtures and rules.

In CI (``CI`` set) a skipped test is a failure: tests that need root, Redis or coturn
must run there, not quietly skip.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest
from hypothesis import settings

# Real redis-server / Redis Cluster fixtures for every test that asks for them.
pytest_plugins = ["tests.redis_fixtures"]

# No timing in unit tests (performance lives in benchmarks/): hypothesis's per-example
# deadline would make a busy CI machine fail tests that are correct.
settings.register_profile("natkit", deadline=None)
settings.load_profile("natkit")


C_EXTENSIONS = ("relay/server/_dataplane.c", "rendezvous/store/_peertable.c")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a stale build of a C extension: an edited ``.c`` needs
    ``pip install -e .`` again (scripts/test.sh does it)."""
    root = Path(__file__).resolve().parent.parent
    for name in C_EXTENSIONS:
        source = root / name
        for built in source.parent.glob(f"{source.stem}.*.so"):
            if built.stat().st_mtime < source.stat().st_mtime:
                raise pytest.UsageError(
                    f"{built.name} is older than {source.name}: pip install -e ."
                )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
