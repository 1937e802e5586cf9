"""``natkit`` console script."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from natkit import __version__, logs
from natkit.settings_cli import add_settings_arguments, settings_from_args
from relay.endpoint import Endpoint
from relay.settings import EndpointList, RelaySettings, StrList
from relay.turn.auth import rest_api_credentials
from rendezvous.settings import RendezvousSettings

LOCAL_RENDEZVOUS_PORT = 8470
LOCAL_UDP_TRACKER_PORT = 6969


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
    # A local stack relays between local programs: loopback peers are allowed here (and
    # only here; `natkit relay` denies them by default).
    allow_peer: StrList = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="CIDR of peer addresses TURN may relay to despite the default deny",
    )
    # TURN REST API secret: a fresh one per run unless given, so TURN works out of the box.
    auth_secret: StrList = Field(
        default_factory=lambda: [secrets.token_urlsafe(24)],
        description="TURN REST API shared secret (default: a random one per run)",
    )


class NetcheckSettings(BaseSettings):
    """``natkit netcheck``: NAT behaviour discovery (``client_sdk.netcheck``)."""

    model_config = SettingsConfigDict(env_prefix="NETCHECK_", extra="forbid")

    stun: StrList = Field(
        default_factory=list,
        description="STUN server HOST:PORT; one with an RFC 5780 alternate address (natkit "
        "relay --alt-listen, coturn with two listening IPs) gives mapping and filtering; "
        "two plain ones give the mapping; repeat for several",
    )
    rendezvous: str = Field(
        default="", description="rendezvous URL: list the relays it offers, with their latency"
    )
    region: str = Field(default="", description="region to ask the rendezvous for relays in")
    rendezvous_token: str = Field(
        default="", description="a tenant's bearer token for the rendezvous (--no-public)"
    )
    mapping_lifetime: bool = Field(
        default=False,
        description="also estimate how long an idle UDP mapping lives (takes up to "
        "--lifetime-max seconds more)",
    )
    lifetime_max: float = Field(
        default=120.0, ge=1.0, le=3600.0, description="longest idle time tried, seconds"
    )


class ConnectSettings(BaseSettings):
    """``natkit connect``: a conversation with another peer (``natkit.chat``)."""

    model_config = SettingsConfigDict(env_prefix="NATKIT_CONNECT_", extra="forbid")

    rendezvous: StrList = Field(
        default_factory=lambda: [f"http://127.0.0.1:{LOCAL_RENDEZVOUS_PORT}"],
        description="rendezvous URL; repeat for several (failover)",
    )
    stun: StrList = Field(
        default_factory=lambda: ["127.0.0.1:3478"],
        description="STUN server HOST:PORT for this peer's public address (the relay)",
    )
    identity_file: str = Field(
        default="", description="this peer's key file (created if missing); empty: a new key"
    )
    token: str = Field(default="", description="a tenant's bearer token for the rendezvous")
    relay_only: bool = Field(
        default=False,
        description="connect through the TURN relay only: this peer's addresses are never "
        "offered to the other",
    )


def _until_signal(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``serve(stop)`` on the relay's event loop (uvloop) until SIGINT or SIGTERM."""
    from relay.eventloop import loop_factory

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


def _rendezvous(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rendezvous import app

    settings = settings_from_args(RendezvousSettings, args, parser)
    logs.configure(settings.log_level)
    _until_signal(lambda stop: app.serve(settings, stop))
    return 0


def _relay(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from relay import app

    settings = settings_from_args(RelaySettings, args, parser)
    logs.configure(settings.log_level)
    app.run(settings)
    return 0


def _netcheck(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from client_sdk.netcheck import NetcheckError, format_table, netcheck
    from client_sdk.netcheck.servers import parse_server

    settings = settings_from_args(NetcheckSettings, args, parser)
    if not settings.stun:
        parser.error("give a STUN server: --stun HOST:PORT (or NETCHECK_STUN)")
    try:
        for server in settings.stun:
            parse_server(server)
    except NetcheckError as exc:
        parser.error(f"--stun: {exc}")
    try:
        report = asyncio.run(
            netcheck(
                settings.stun,
                rendezvous=settings.rendezvous or None,
                region=settings.region,
                rendezvous_token=settings.rendezvous_token or None,
                mapping_lifetime=settings.mapping_lifetime,
                lifetime_max=settings.lifetime_max,
            )
        )
    except NetcheckError as exc:
        parser.exit(1, f"natkit netcheck: {exc}\n")
    print(report.to_json() if args.json else format_table(report))
    return 0


def _connect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from client_sdk import RendezvousError
    from natkit import chat

    settings = settings_from_args(ConnectSettings, args, parser)
    try:
        return asyncio.run(
            chat.run(
                settings.rendezvous,
                settings.stun,
                args.peer_id,
                identity_file=settings.identity_file or None,
                token=settings.token or None,
                relay_only=settings.relay_only,
            )
        )
    except RendezvousError as exc:
        parser.exit(1, f"natkit connect: {exc}\n")


def _up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from relay import app as relay_app
    from relay.heartbeat import relay_uris
    from rendezvous import app as rendezvous_app

    settings = settings_from_args(LocalRelaySettings, args, parser)
    logs.configure(settings.log_level)
    rendezvous = RendezvousSettings(
        host="127.0.0.1",
        port=args.rendezvous_port,
        store="memory",
        udp_tracker=f"127.0.0.1:{args.udp_tracker_port}",
        http_tracker=f"127.0.0.1:{args.http_tracker_port}",
        # The relay's REST secret: /v1/turn-credentials mints credentials for this relay.
        turn_secret=settings.auth_secret[0] if settings.auth_secret else "",
        turn_uris=relay_uris(settings),
        log_level=settings.log_level,
    )
    primary = settings.listen[0]
    print("natkit is up on this machine (Ctrl-C stops it):")
    print(f"  rendezvous http://127.0.0.1:{rendezvous.port}/v1  (memory store)")
    print(f"  TURN creds http://127.0.0.1:{rendezvous.port}/v1/turn-credentials (signed)")
    print(f"  tracker    http://{rendezvous.http_tracker}/announce")
    print(f"             udp://{rendezvous.udp_tracker}/announce")
    print(f"  STUN       stun:{primary}")
    for alt in settings.alt_listen:
        print(f"  STUN alt   stun:{alt}  (RFC 5780 NAT behaviour discovery)")
    if settings.auth_secret:
        username, password = rest_api_credentials(
            settings.auth_secret[0], "dev", 24 * 3600, time.time()
        )
        print(f"  TURN       turn:{primary}?transport=udp (also tcp)")
        print(f"             REST secret {settings.auth_secret[0]}")
        print(f"             e.g. username {username} password {password} (24 h)")
    if settings.metrics_listen is not None:
        print(f"  metrics    http://{settings.metrics_listen}/metrics")
    sys.stdout.flush()

    async def both(stop: asyncio.Event) -> None:
        await asyncio.gather(
            relay_app.serve(settings, stop), rendezvous_app.serve(rendezvous, stop)
        )

    _until_signal(both)
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
        description="Run the whole natkit stack on localhost: the relay (RFC 5780 on "
        "127.0.0.1 and 127.0.0.2) and the rendezvous server on its memory store. Relay "
        "flags as for 'natkit relay'.",
    )
    add_settings_arguments(up, LocalRelaySettings)
    up.add_argument(
        "--rendezvous-port",
        type=int,
        default=LOCAL_RENDEZVOUS_PORT,
        help=f"TCP port of the rendezvous server on 127.0.0.1 (default: {LOCAL_RENDEZVOUS_PORT})",
    )
    up.add_argument(
        "--udp-tracker-port",
        type=int,
        default=LOCAL_UDP_TRACKER_PORT,
        help=f"UDP port of the BitTorrent tracker on 127.0.0.1 (default: {LOCAL_UDP_TRACKER_PORT})",
    )
    up.add_argument(
        "--http-tracker-port",
        type=int,
        default=LOCAL_UDP_TRACKER_PORT,
        help="TCP port of the BitTorrent HTTP tracker on 127.0.0.1 "
        f"(default: {LOCAL_UDP_TRACKER_PORT})",
    )
    up.set_defaults(handler=_up, sub=up)

    rendezvous = commands.add_parser(
        "rendezvous",
        help="run the rendezvous server (peer registry, swarms)",
        description="Rendezvous server: signed peer registration and swarm peer lists "
        "(/v1 JSON API) on the memory store or Redis. Every flag can also be set in the "
        "environment (RENDEZVOUS_<FLAG>).",
    )
    add_settings_arguments(rendezvous, RendezvousSettings)
    rendezvous.set_defaults(handler=_rendezvous, sub=rendezvous)

    relay = commands.add_parser(
        "relay",
        help="run the STUN relay server",
        description="STUN server (RFC 8489 Binding, RFC 5780 NAT behaviour discovery). "
        "Every flag can also be set in the environment (RELAY_<FLAG>).",
    )
    add_settings_arguments(relay, RelaySettings)
    relay.set_defaults(handler=_relay, sub=relay)

    netcheck = commands.add_parser(
        "netcheck",
        help="discover the NAT between this host and STUN servers",
        description="NAT behaviour discovery: public address, mapping and filtering "
        "behaviour (RFC 5780 tests against a STUN server with an alternate address, or "
        "two servers compared), port preservation, hairpinning, whether UDP works, relay "
        "latency (--rendezvous) and, with --mapping-lifetime, the idle mapping lifetime. "
        "Exit status 0 whatever the network does (UDP blocked is a result); 1 when the "
        "check cannot run. Every flag can also be set in the environment (NETCHECK_<FLAG>).",
    )
    add_settings_arguments(netcheck, NetcheckSettings)
    for action in netcheck._actions:  # the generated flags say VALUE; these say what
        action.metavar = {"stun": "HOST:PORT", "rendezvous": "URL"}.get(action.dest, action.metavar)
    netcheck.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (stable keys; README, 'natkit netcheck')",
    )
    netcheck.set_defaults(handler=_netcheck, sub=netcheck)

    connect = commands.add_parser(
        "connect",
        help="talk to another peer: lines typed here appear there",
        description="Two terminals, one command each: 'natkit connect' listens and prints "
        "its peer id; 'natkit connect PEER_ID' on the other side connects to it, over a "
        "direct, authenticated and encrypted path. Then each line typed goes to the peer. "
        "Defaults suit 'natkit up' on this machine. Every flag can also be set in the "
        "environment (NATKIT_CONNECT_<FLAG>).",
    )
    connect.add_argument("peer_id", nargs="?", help="the peer to connect to (none: listen)")
    add_settings_arguments(connect, ConnectSettings)
    connect.set_defaults(handler=_connect, sub=connect)
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
