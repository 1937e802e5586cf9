"""The lab needs root and netfilter tools; without them its tests skip -- except in CI
(``CI`` set), where a skip would hide that NAT traversal went untested, so it fails."""

from __future__ import annotations

import os

import pytest

from tests.natlab.netns import missing_requirements


def require_lab() -> None:
    """Skip (fail in CI) when the lab cannot run here; every lab fixture calls it first."""
    problem = missing_requirements()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI must run the NAT lab (.ci/run installs what it needs)")
    pytest.skip(problem)


@pytest.fixture(autouse=True)
def _lab_can_run() -> None:
    require_lab()
