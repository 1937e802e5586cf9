"""natkit relay: a STUN server (RFC 8489 Binding, RFC 5780 NAT behaviour discovery).

- ``relay.stun``: the sans-IO STUN message codec.
- ``relay.server``: protocol cores (``binding``), listener planning, the asyncio shim,
  worker processes.
- ``relay.app``: running it; ``relay.settings``: its configuration (``RELAY_`` env).
"""
