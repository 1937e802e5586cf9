from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from relay.endpoint import Endpoint
from relay.server.listeners import plan_listeners
from relay.settings import RelaySettings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:3478", Endpoint("127.0.0.1", 3478)),
        ("[::1]:5349", Endpoint("::1", 5349)),
        ("10.0.0.1", Endpoint("10.0.0.1", 3478)),
        ("[2001:db8::0001]", Endpoint("2001:db8::1", 3478)),
        ("0.0.0.0:0", Endpoint("0.0.0.0", 0)),
    ],
)
def test_endpoint_parse(text: str, expected: Endpoint) -> None:
    assert Endpoint.parse(text, default_port=3478) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("example.com:3478", "not a numeric"),
        ("1.2.3.4:x", "not a number"),
        ("1.2.3.4:70000", "out of range"),
        ("[::1", "missing ']'"),
        ("[::1]x", "expected ':PORT'"),
        ("1.2.3.4", "missing ':PORT'"),
    ],
)
def test_endpoint_parse_errors(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Endpoint.parse(text)


def test_endpoint_str_round_trip() -> None:
    for text in ("127.0.0.1:1", "[::1]:2"):
        assert str(Endpoint.parse(text)) == text


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LISTEN", "127.0.0.1:4000, [::1]:4001")
    monkeypatch.setenv("RELAY_ALT_LISTEN", '["127.0.0.2:4002"]')
    monkeypatch.setenv("RELAY_WORKERS", "3")
    monkeypatch.setenv("RELAY_RFC3489", "true")
    monkeypatch.setenv("RELAY_METRICS_LISTEN", "")
    settings = RelaySettings()
    assert settings.listen == [Endpoint("127.0.0.1", 4000), Endpoint("::1", 4001)]
    assert settings.alt_listen == [Endpoint("127.0.0.2", 4002)]
    assert settings.workers == 3
    assert settings.rfc3489 is True
    assert settings.metrics_listen is None


def test_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_WORKERS", "3")
    assert RelaySettings(workers=2).workers == 2


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"alt_listen": ["127.0.0.2:3479"], "listen": ["[::1]:3478"]}, "no --listen address"),
        ({"alt_listen": ["127.0.0.2:3479"], "listen": ["0.0.0.0:3478"]}, "wildcard"),
        ({"alt_listen": ["127.0.0.1:3479"], "listen": ["127.0.0.1:3478"]}, "both"),
        ({"alt_listen": ["127.0.0.2:3478"], "listen": ["127.0.0.1:3478"]}, "both"),
        (
            {"alt_listen": ["127.0.0.2:3479", "127.0.0.3:3480"], "listen": ["127.0.0.1:3478"]},
            "only one alternate",
        ),
        ({"listen": []}, "at least one"),
        ({"workers": 0}, "greater than or equal to 1"),
        ({"listen": ["nonsense"]}, "not a numeric"),
        ({"log_level": "loud"}, "log_level"),
        ({"user": ["nopassword"]}, "NAME:PASSWORD"),
        ({"user": [":pw"]}, "NAME:PASSWORD"),
        ({"allow_peer": ["10.0.0.0/33"]}, "not a CIDR"),
        ({"deny_peer": ["nonsense"]}, "not a CIDR"),
        ({"min_port": 60000, "max_port": 50000}, "above --max-port"),
        ({"tls_listen": ["127.0.0.1:5349"]}, "needs --cert and --key"),
        ({"external_ip": ["1.2.3.4/::1"]}, "families differ"),
        ({"external_ip": ["not-an-ip"]}, "PUBLIC"),
        ({"external_ip": ["1.2.3.4", "5.6.7.8"]}, "one per address family"),
        ({"relay_ip": ["127.0.0.1", "127.0.0.2"]}, "one address per family"),
    ],
)
def test_invalid_settings(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        RelaySettings.model_validate(kwargs)


def test_plan_without_alternate() -> None:
    listeners = plan_listeners(
        RelaySettings.model_validate({"listen": ["127.0.0.1:3478", "[::1]:3478"]})
    )
    assert [str(x.address) for x in listeners] == ["127.0.0.1:3478", "[::1]:3478"]
    assert all(x.other is None and x.change is None for x in listeners)


def test_plan_rfc5780_four_sockets() -> None:
    settings = RelaySettings.model_validate(
        {"listen": ["127.0.0.1:3478"], "alt_listen": ["127.0.0.2:3479"]}
    )
    listeners = plan_listeners(settings)
    by_address = {str(x.address): x for x in listeners}
    assert set(by_address) == {
        "127.0.0.1:3478",
        "127.0.0.1:3479",
        "127.0.0.2:3478",
        "127.0.0.2:3479",
    }
    for listener in listeners:
        assert listener.other is not None
        assert listener.change is not None
        ip, port = listener.address
        # OTHER-ADDRESS differs in both IP and port (RFC 5780 §7.4).
        assert listener.other.host != ip
        assert listener.other.port != port
        same, change_port, change_ip, change_both = (listeners[i].address for i in listener.change)
        assert same == listener.address
        assert change_port == Endpoint(ip, listener.other.port)
        assert change_ip == Endpoint(listener.other.host, port)
        assert change_both == listener.other


def test_plan_deduplicates_explicit_listen() -> None:
    settings = RelaySettings.model_validate(
        {
            "listen": ["127.0.0.1:3478", "127.0.0.2:3478"],
            "alt_listen": ["127.0.0.2:3479"],
        }
    )
    assert len(plan_listeners(settings)) == 4


def test_relay_addresses_and_external_ip() -> None:
    settings = RelaySettings.model_validate(
        {"listen": ["127.0.0.1:3478", "0.0.0.0:3479", "[::1]:3478"]}
    )
    assert settings.relay_ips() == {
        socket.AF_INET: ("127.0.0.1", "127.0.0.1"),
        socket.AF_INET6: ("::1", "::1"),
    }
    behind_nat = RelaySettings.model_validate(
        {"listen": ["0.0.0.0:3478"], "external_ip": ["198.51.100.1/10.0.0.5"]}
    )
    assert behind_nat.relay_ips() == {socket.AF_INET: ("10.0.0.5", "198.51.100.1")}
    public_only = RelaySettings.model_validate(
        {"listen": ["10.0.0.5:3478"], "external_ip": ["198.51.100.1"]}
    )
    assert public_only.relay_ips() == {socket.AF_INET: ("10.0.0.5", "198.51.100.1")}
    assert RelaySettings.model_validate({"user": ["a:b:c", "d:e"]}).users() == {
        "a": "b:c",
        "d": "e",
    }
