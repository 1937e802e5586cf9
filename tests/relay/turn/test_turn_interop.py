"""natkit relay's TURN against coturn's own test client, turnutils_uclient (with the
turnutils_peer echo peer): static credentials and the REST secret, ChannelData and Send
indications, no loss at a moderate load."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.netutil import free_udp_port
from tests.relay.relay_process import natkit_relay, wait_until_live

pytestmark = pytest.mark.interop

USER, PASSWORD, SECRET = "alice", "wonderland", "rest-secret"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package coturn)")
    return path


@pytest.fixture(scope="module")
def echo_peer() -> Iterator[int]:
    port = free_udp_port()
    peer = subprocess.Popen(
        [tool("turnutils_peer"), "-L", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        peer.kill()
        peer.wait()


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("uclient-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=natkit",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture(scope="module")
def turn_relay(tls_pair: tuple[str, str]) -> Iterator[tuple[int, int]]:
    """natkit relay on UDP+TCP port P and TLS port T: yields (P, T)."""
    port, tls_port = free_udp_port(), free_udp_port()
    cert, key = tls_pair
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", "--user", f"{USER}:{PASSWORD}"),
        *("--auth-secret", SECRET, "--allow-peer", "127.0.0.0/8", "--realm", "natkit.test"),
        *("--tls-listen", f"127.0.0.1:{tls_port}", "--cert", cert, "--key", key),
        *("--metrics-listen", "", "--log-level", "warning"),
        wait_on=("127.0.0.1", port),
    ):
        yield port, tls_port


def uclient(
    port: int, peer: int, *flags: str, messages: int = 50, clients: int = 4, length: int = 200
) -> str:
    argv = [
        tool("turnutils_uclient"),
        *flags,
        "-e",
        "127.0.0.1",
        "-r",
        str(peer),
        "-n",
        str(messages),
        "-m",
        str(clients),
        "-l",
        str(length),
        "-z",
        "5",
        "-p",
        str(port),
        "127.0.0.1",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def assert_all_delivered(out: str, expected: int) -> None:
    sent = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", out)
    assert sent, out
    assert sent[-1] == (str(expected), str(expected)), out
    assert "Total lost packets 0 (0.000000%)" in out, out


MODES = {
    "udp-channeldata": (),
    "udp-send-indications": ("-s",),
    "tcp-channeldata": ("-t",),
    "tcp-send-indications": ("-t", "-s"),
    "tls-channeldata": ("-t", "-S"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_uclient_static_user(turn_relay: tuple[int, int], echo_peer: int, mode: str) -> None:
    port = turn_relay[1] if "-S" in MODES[mode] else turn_relay[0]
    # 170-byte messages: not a multiple of 4, so stream padding is exercised.
    out = uclient(port, echo_peer, *MODES[mode], "-u", USER, "-w", PASSWORD, length=170)
    assert_all_delivered(out, 200)


@pytest.mark.parametrize("mode", [(), ("-s",)], ids=["channeldata", "send-indications"])
def test_uclient_rest_secret(
    turn_relay: tuple[int, int], echo_peer: int, mode: tuple[str, ...]
) -> None:
    out = uclient(turn_relay[0], echo_peer, *mode, "-u", "carol", "-W", SECRET)
    assert_all_delivered(out, 200)


def test_uclient_wrong_password_fails(turn_relay: tuple[int, int], echo_peer: int) -> None:
    argv = [
        tool("turnutils_uclient"),
        "-u",
        USER,
        "-w",
        "wrong",
        "-e",
        "127.0.0.1",
        "-r",
        str(echo_peer),
        "-n",
        "5",
        "-m",
        "1",
        "-p",
        str(turn_relay),
        "127.0.0.1",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    out = done.stdout + done.stderr
    assert "tot_recv_msgs=5" not in out, out
    assert done.returncode != 0 or "error 401" in out.lower() or "401" in out, out


def test_uclient_against_two_workers_and_metrics(echo_peer: int) -> None:
    """With --workers 2 each allocation lives in the worker that owns the client's
    5-tuple (SO_REUSEPORT keeps sending a client to the same socket), EVEN-PORT
    reservations are honoured by either worker, and the supervisor's /metrics sums
    both workers."""
    import time
    import urllib.request

    from tests.netutil import free_tcp_port

    port, metrics = free_udp_port(), free_tcp_port()
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", "--user", f"{USER}:{PASSWORD}", "--workers", "2"),
        *("--allow-peer", "127.0.0.0/8", "--metrics-listen", f"127.0.0.1:{metrics}"),
        "--log-level",
        "warning",
        wait_on=("127.0.0.1", port),
    ):
        # Until every worker has bound, SO_REUSEPORT may still move a client between them.
        wait_until_live(metrics)
        # uclient's default: RTP/RTCP pairs, the RTCP port reserved with EVEN-PORT R and
        # claimed from another client socket -- which SO_REUSEPORT may hash to the other
        # worker: the RESERVATION-TOKEN must work in either (relay.turn.reservation).
        out = uclient(port, echo_peer, "-u", USER, "-w", PASSWORD, clients=8)
        assert_all_delivered(out, 400)
        text = ""
        for _ in range(40):  # workers report once a second
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
                text = r.read().decode()
            if 'natkit_turn_relayed_packets_total{direction="to_client"} 400.0' in text:
                break
            time.sleep(0.1)
        assert 'natkit_turn_relayed_packets_total{direction="to_peer"} 400.0' in text, text
        assert 'natkit_turn_relayed_packets_total{direction="to_client"} 400.0' in text, text
        assert 'natkit_turn_requests_total{method="allocate"}' in text, text
        assert "natkit_turn_allocations_created_total" in text, text
        assert "natkit_relay_workers 2.0" in text, text
