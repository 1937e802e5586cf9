"""natkit client SDK: NAT discovery, hole punching and relay fallback (issues #5, #6;
hole punching and relay fallback not built yet).

``client_sdk.netcheck(...) -> NatReport``: NAT behaviour discovery. The attribute is the
function (DESIGN.md); the package of the same name holds its parts: import them with
``from client_sdk.netcheck import NatReport`` (``import client_sdk.netcheck as m`` would
bind the function, since Python resolves that form by attribute).
"""

from client_sdk.netcheck import (
    FilteringBehavior,
    MappingBehavior,
    NatReport,
    NetcheckError,
)
from client_sdk.netcheck import netcheck as netcheck

__all__ = ["FilteringBehavior", "MappingBehavior", "NatReport", "NetcheckError", "netcheck"]
