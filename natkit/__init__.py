"""natkit's command line: ``natkit up | relay | rendezvous | netcheck | connect``."""

__version__ = "0.1.0"
