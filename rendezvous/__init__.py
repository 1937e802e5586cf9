"""natkit rendezvous: signaling and tracker server (issue #4; not built yet)."""
