"""``natkit`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import Field

from natkit import __version__, logs
from natkit.settings_cli import add_settings_arguments, settings_from_args
from relay.endpoint import Endpoint
from relay.settings import EndpointList, RelaySettings


class LocalRelaySettings(RelaySettings):
    """``natkit up``: the relay on loopback, RFC 5780-ready on 127.0.0.1 + 127.0.0.2."""

    listen: EndpointList = Field(
        default_factory=lambda: [Endpoint("127.0.0.1", 3478)],
        description="UDP address to answer STUN on; repeat for several",
    )
    alt_listen: EndpointList = Field(
        default_factory=lambda: [Endpoint("127.0.0.2", 3479)],
        description="RFC 5780 alternate address of the first --listen address",
    )


def _relay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from relay import app

    settings = settings_from_args(RelaySettings, args, parser)
    logs.configure(settings.log_level)
    app.run(settings)
    return 0


def _up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from relay import app

    settings = settings_from_args(LocalRelaySettings, args, parser)
    logs.configure(settings.log_level)
    primary = settings.listen[0]
    print("natkit is up on this machine (Ctrl-C stops it):")
    print(f"  STUN       stun:{primary}")
    for alt in settings.alt_listen:
        print(f"  STUN alt   stun:{alt}  (RFC 5780 NAT behaviour discovery)")
    if settings.metrics_listen is not None:
        print(f"  metrics    http://{settings.metrics_listen}/metrics")
    sys.stdout.flush()
    app.run(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natkit", description="NAT traversal toolkit: STUN/TURN relay, rendezvous, SDK"
    )
    parser.add_argument("--version", action="version", version=f"natkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run the whole stack on localhost on its embedded defaults",
        description="Run the whole natkit stack on localhost (relay with RFC 5780 on "
        "127.0.0.1 and 127.0.0.2). Relay flags as for 'natkit relay'.",
    )
    add_settings_arguments(up, LocalRelaySettings)
    up.set_defaults(handler=_up, sub=up)

    relay = commands.add_parser(
        "relay",
        help="run the STUN relay server",
        description="STUN server (RFC 8489 Binding, RFC 5780 NAT behaviour discovery). "
        "Every flag can also be set in the environment (RELAY_<FLAG>).",
    )
    add_settings_arguments(relay, RelaySettings)
    relay.set_defaults(handler=_relay, sub=relay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args, args.sub))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        parser.exit(1, f"natkit {args.command}: {exc}\n")
