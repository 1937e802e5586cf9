"""The NAT lab: real Linux NATs in network namespaces, built from a short description
(``Lab``, ``Nat``), for tests that must cross NATs. See ``lab.py`` for the topology and
``nat.py`` for the behaviours; ``../shared/NATLAB.md`` for the recipe it grew from."""

from tests.natlab.lab import SERVER_IPS, Host, Lab, Router
from tests.natlab.nat import BEHAVIOURS, Nat
from tests.natlab.netns import LabError, Netns, missing_requirements

__all__ = [
    "BEHAVIOURS",
    "SERVER_IPS",
    "Host",
    "Lab",
    "LabError",
    "Nat",
    "Netns",
    "Router",
    "missing_requirements",
]
