"""natkit relay against STUN clients nobody here wrote: coturn's turnutils_stunclient and
turnutils_natdiscovery (Debian package coturn), on 127.0.0.1 + 127.0.0.2."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.netutil import free_tcp_port, free_udp_port
from tests.relay.relay_process import natkit_relay

pytestmark = pytest.mark.interop


def coturn_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package coturn; scripts/install-system-deps.sh)")
    return path


@pytest.fixture(scope="module")
def rfc5780_relay() -> Iterator[tuple[int, int]]:
    port = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    alt = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    with natkit_relay(
        "--listen",
        f"127.0.0.1:{port}",
        "--alt-listen",
        f"127.0.0.2:{alt}",
        "--metrics-listen",
        f"127.0.0.1:{free_tcp_port()}",
        "--log-level",
        "warning",
        wait_on=("127.0.0.1", port),
    ):
        yield port, alt


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_turnutils_stunclient(rfc5780_relay: tuple[int, int]) -> None:
    port, _ = rfc5780_relay
    out = run([coturn_tool("turnutils_stunclient"), "-p", str(port), "127.0.0.1"])
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", out), out


def test_turnutils_stunclient_rfc5780(rfc5780_relay: tuple[int, int]) -> None:
    port, alt = rfc5780_relay
    out = run([coturn_tool("turnutils_stunclient"), "-f", "-p", str(port), "127.0.0.1"])
    assert f"Response origin: : 127.0.0.1:{port}" in out, out
    assert f"Other addr: : 127.0.0.2:{alt}" in out, out
    # Response 2 and 3 come from the alternate address (CHANGE-REQUEST ip+port).
    assert f"Response origin: : 127.0.0.2:{alt}" in out, out
    assert out.count("UDP reflexive addr: 127.0.0.1:") == 3, out


def test_turnutils_natdiscovery_mapping_and_filtering(rfc5780_relay: tuple[int, int]) -> None:
    port, _ = rfc5780_relay
    out = run([coturn_tool("turnutils_natdiscovery"), "-m", "-f", "-p", str(port), "127.0.0.1"])
    # On loopback there is no NAT: the mapping and the filtering are both independent.
    assert "NAT with Endpoint Independent Mapping!" in out, out
    assert "NAT with Endpoint Independent Filtering!" in out, out
    assert "ALG" not in out.replace("No ALG", ""), out


def test_turnutils_natdiscovery_with_padding(rfc5780_relay: tuple[int, int]) -> None:
    port, _ = rfc5780_relay
    out = run(
        [coturn_tool("turnutils_natdiscovery"), "-m", "-f", "-P", "-p", str(port), "127.0.0.1"]
    )
    assert "NAT with Endpoint Independent Mapping!" in out, out
    assert "NAT with Endpoint Independent Filtering!" in out, out


@pytest.mark.parametrize("rfc3489", [True, False])
def test_classic_rfc3489_client(rfc3489: bool) -> None:
    """pystun3 (a classic RFC 3489 client) classifies loopback as 'Open Internet' only when
    --rfc3489 is on; by default classic requests go unanswered."""
    import stun  # pystun3

    port = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    alt = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    flag = "--rfc3489" if rfc3489 else "--no-rfc3489"
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", "--alt-listen", f"127.0.0.2:{alt}", flag),
        *("--metrics-listen", "", "--log-level", "warning"),
        wait_on=("127.0.0.1", port),
    ):
        nat_type, ip, _ = stun.get_ip_info(
            source_ip="127.0.0.1", source_port=0, stun_host="127.0.0.1", stun_port=port
        )
    if rfc3489:
        assert (nat_type, ip) == ("Open Internet", "127.0.0.1")
    else:
        assert (nat_type, ip) == ("Blocked", None)
