"""The bare aiohttp ceiling for the HTTP tracker benchmark: ``/announce`` answered with a
constant bencoded body, nothing parsed or stored (uvloop, one process, no access log).
Prints ``READY <port>`` once listening."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

BODY = b"d8:intervali1800e5:peers0:e"


async def announce(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/announce", announce)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
