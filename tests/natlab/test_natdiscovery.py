"""An independent classifier agrees with the lab: coturn's ``turnutils_natdiscovery`` (an
RFC 5780 client nobody here wrote), run from a host behind each lab NAT against natkit's
relay on the public segment, reports the NAT's labelled mapping and filtering. This holds
both ends to the RFC at once: the lab's NATs, and natkit relay's RFC 5780 answers."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from tests.natlab import Lab, Nat
from tests.natlab.conftest import require_lab
from tests.natlab.servers import natkit_relay

NATS = {
    "full": Nat(filtering="endpoint-independent"),
    "restricted": Nat(filtering="address-dependent"),
    "port": Nat(),
    "symmetric": Nat(mapping="address-and-port-dependent"),
}
WORDS = {
    "Endpoint Independent": "endpoint-independent",
    "Address Dependent": "address-dependent",
    "Address and Port Dependent": "address-and-port-dependent",
}


@pytest.fixture(scope="module")
def relay_lab() -> Iterator[tuple[Lab, tuple[str, int]]]:
    require_lab()
    if shutil.which("turnutils_natdiscovery") is None:
        pytest.fail("turnutils_natdiscovery missing (apt-get install coturn)")
    with Lab(nats=NATS, hosts={name: name for name in NATS}) as lab, natkit_relay(lab) as server:
        yield lab, server


@pytest.mark.parametrize("host", list(NATS))
def test_natdiscovery_sees_each_lab_nat_as_labelled(
    relay_lab: tuple[Lab, tuple[str, int]], host: str
) -> None:
    lab, (ip, port) = relay_lab
    out = lab.host(host).ns.run("turnutils_natdiscovery", "-m", "-f", ip, "-p", str(port))
    found = {
        kind.lower(): WORDS[words]
        for words, kind in re.findall(r"NAT with (.+?) (Mapping|Filtering)!", out)
    }
    nat = NATS[host]
    assert found == {"mapping": nat.mapping, "filtering": nat.filtering}, out
