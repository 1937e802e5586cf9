"""Build of the optional C extensions; everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# relay.server._dataplane: batched UDP I/O and ChannelData forwarding (Linux: recvmmsg,
# sendmmsg, epoll). Optional: without it (another OS, no compiler) the relay serves UDP
# through the event loop's datagram transports, with the same behaviour, more slowly.
ext_modules = (
    [
        Extension(
            "relay.server._dataplane",
            sources=["relay/server/_dataplane.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
    if sys.platform == "linux"
    else []
)
# rendezvous.store._peertable: the memory store's swarms in flat arrays (portable C).
# Optional: without it the memory store keeps its swarms in Python, more slowly.
ext_modules.append(
    Extension(
        "rendezvous.store._peertable",
        sources=["rendezvous/store/_peertable.c"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
        if sys.platform != "win32"
        else [],
        optional=True,
    )
)

setup(ext_modules=ext_modules)
