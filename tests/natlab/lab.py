"""A topology of real NATs in network namespaces, from a short description.

    with Lab(nats={"home": Nat(filtering="address-dependent")}, hosts={"alice": "home"}) as lab:
        sock = lab.host("alice").ns.socket()   # a UDP socket behind the home NAT
        server = lab.public.socket()           # one on the public segment
        server.bind((lab.server_ip(0), 3478))

The public segment (``lab.public``, the "internet") is a bridge holding the servers'
addresses ``203.0.113.1`` and ``.2`` (two, for RFC 5780). Each NAT is a router namespace:
its ``wan`` on the public segment (``203.0.113.11`` onwards) or, with ``Nat(behind=...)``,
on another router's LAN (a home NAT behind a carrier-grade NAT); its ``lan`` a bridge on
``10.<n>.0.1/24`` where its hosts (``10.<n>.0.10`` onwards) and any routers behind it
attach. ``Nat`` (``tests.natlab.nat``) says how it translates and filters.

Every namespace is removed on ``close`` (and on a failed build); ``remove_stale`` in
``build`` clears what a killed run left behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from tests.natlab.nat import Nat, iptables_rules, ruleset, sysctls
from tests.natlab.netns import LabError, Netns, remove_stale, sh, veth_names

PUBLIC_PREFIX = "203.0.113"  # TEST-NET-3 (RFC 5737): documentation only, never routed
SERVER_IPS = (f"{PUBLIC_PREFIX}.1", f"{PUBLIC_PREFIX}.2")


@dataclass
class Router:
    name: str
    nat: Nat
    ns: Netns
    index: int
    wan_ip: str = ""
    hosts: int = 0  # addresses handed out on the LAN
    ports: int = 0  # bridge ports made on the LAN

    @property
    def lan_ip(self) -> str:
        return f"10.{self.index}.0.1"

    @property
    def lan_subnet(self) -> str:
        return f"10.{self.index}.0.0/24"

    def next_lan_ip(self) -> str:
        self.hosts += 1
        return f"10.{self.index}.0.{9 + self.hosts}"

    def flush(self) -> None:
        """Forget every mapping (conntrack entries and the learnt port -> host map)."""
        self.ns.run("conntrack", "-F", check=False)
        for kind, name in (("map", "owner"), ("set", "contacted")):
            self.ns.run("nft", "flush", kind, "ip", "natlab", name, check=False)


@dataclass
class Host:
    name: str
    ns: Netns
    ip: str
    router: Router


@dataclass
class Lab:
    """See the module docstring. ``nats``: name -> ``Nat``; ``hosts``: name -> the name of
    the NAT it sits behind."""

    nats: Mapping[str, Nat]
    hosts: Mapping[str, str]
    public: Netns = field(init=False)
    routers: dict[str, Router] = field(init=False, default_factory=dict)
    members: dict[str, Host] = field(init=False, default_factory=dict)
    _made: list[Netns] = field(init=False, default_factory=list)
    _public_ports: int = field(init=False, default=0)

    def __enter__(self) -> Lab:
        self.build()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # ---- building

    def build(self) -> None:
        for host, router in self.hosts.items():
            if router not in self.nats:
                raise LabError(f"host {host} is behind {router}, which is no NAT of this lab")
        remove_stale()
        try:
            self.public = self._namespace("pub")
            self.public.ip("link", "add", "br0", "type", "bridge")
            self.public.ip("link", "set", "br0", "up")
            for address in SERVER_IPS:
                self.public.ip("addr", "add", f"{address}/24", "dev", "br0")
            for index, name in enumerate(self._upstream_first(), start=1):
                self._router(name, index)
            for name, router in self.hosts.items():
                self._host(name, self.routers[router])
        except BaseException:
            self.close()
            raise

    def _namespace(self, role: str) -> Netns:
        ns = Netns.create(role)
        self._made.append(ns)
        return ns

    def _upstream_first(self) -> list[str]:
        """The NATs, each after the one it is behind (a cycle is an error)."""
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in ordered:
                return
            if name in visiting:
                raise LabError(f"NAT {name} is (indirectly) behind itself")
            visiting.add(name)
            upstream = self.nats[name].behind
            if upstream is not None:
                if upstream not in self.nats:
                    raise LabError(f"NAT {name} is behind {upstream}, which is no NAT of this lab")
                visit(upstream)
            ordered.append(name)

        for name in self.nats:
            visit(name)
        return ordered

    def _link(self, left: Netns, left_name: str, right: Netns, right_name: str) -> None:
        """A veth pair between two namespaces, named as given inside each."""
        a, b = veth_names()
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        try:
            sh("ip", "link", "set", a, "netns", left.name, "name", left_name)
            sh("ip", "link", "set", b, "netns", right.name, "name", right_name)
        except LabError:
            sh("ip", "link", "delete", a, check=False)
            raise
        left.ip("link", "set", left_name, "up")
        right.ip("link", "set", right_name, "up")

    def _router(self, name: str, index: int) -> None:
        nat = self.nats[name]
        router = Router(name, nat, self._namespace(f"nat{index}"), index)
        ns = router.ns
        if nat.behind is None:  # on the public segment
            self._public_ports += 1
            port = f"p{self._public_ports}"
            self._link(self.public, port, ns, "wan")
            self.public.ip("link", "set", port, "master", "br0")
            router.wan_ip = f"{PUBLIC_PREFIX}.{10 + index}"
            gateway = None
        else:
            upstream = self.routers[nat.behind]
            upstream.ports += 1
            port = f"p{upstream.ports}"
            self._link(upstream.ns, port, ns, "wan")
            self._lan_port(upstream, port)
            router.wan_ip = upstream.next_lan_ip()
            gateway = upstream.lan_ip
        ns.ip("addr", "add", f"{router.wan_ip}/24", "dev", "wan")
        if gateway is not None:
            ns.ip("route", "add", "default", "via", gateway)
        ns.ip("link", "add", "lan", "type", "bridge")
        ns.ip("link", "set", "lan", "up")
        ns.ip("addr", "add", f"{router.lan_ip}/24", "dev", "lan")
        ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns.run("nft", "-f", "-", stdin=ruleset(nat, router.wan_ip, router.lan_subnet))
        for rule in iptables_rules(nat, router.wan_ip):
            ns.run("iptables", *rule)
        for setting in sysctls(nat):
            ns.run("sysctl", "-qw", setting)
        self.routers[name] = router

    @staticmethod
    def _lan_port(router: Router, port: str) -> None:
        """``port`` joins the router's LAN bridge. In hairpin mode: a packet the router
        routes back to the host it came from (a hairpinned one, between two sockets of one
        host) leaves by the port it came in on, which a bridge otherwise refuses."""
        router.ns.ip("link", "set", port, "master", "lan")
        router.ns.run("bridge", "link", "set", "dev", port, "hairpin", "on")

    def _host(self, name: str, router: Router) -> None:
        ns = self._namespace(name)
        router.ports += 1
        port = f"p{router.ports}"
        self._link(router.ns, port, ns, "eth0")
        self._lan_port(router, port)
        ip = router.next_lan_ip()
        ns.ip("addr", "add", f"{ip}/24", "dev", "eth0")
        ns.ip("route", "add", "default", "via", router.lan_ip)
        self.members[name] = Host(name, ns, ip, router)

    # ---- using

    def host(self, name: str) -> Host:
        return self.members[name]

    def router(self, name: str) -> Router:
        return self.routers[name]

    @staticmethod
    def server_ip(which: int = 0) -> str:
        """One of the public segment's two server addresses."""
        return SERVER_IPS[which]

    def flush(self) -> None:
        """Every router forgets its mappings (between independent checks)."""
        for router in self.routers.values():
            router.flush()

    def close(self) -> None:
        made, self._made = self._made, []
        for ns in reversed(made):
            ns.delete()
