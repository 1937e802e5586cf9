"""Build of the relay's optional C data plane; everything else is in pyproject.toml."""

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

setup(ext_modules=ext_modules)
