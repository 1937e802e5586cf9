"""WebSocket signaling: peers connected to any instance exchange messages by peer_id.

``bus`` carries a message to the instance holding the target's socket (Redis pub/sub, or
in-process); ``hub`` holds this instance's sockets; ``protocol`` is the JSON wire format.
"""
