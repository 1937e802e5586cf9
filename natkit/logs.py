"""One logging set-up for every ``natkit`` command: one line per record."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT, force=True)
    # aiohttp's access log is per request; keep it at debug level.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
