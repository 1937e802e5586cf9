"""TURN server core (RFC 8656): allocations, peer policy and ChannelData framing."""
