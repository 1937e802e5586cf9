"""Anti-replay sliding window over 64-bit counters (RFC 6479, "IPsec Anti-Replay Algorithm
without Bit Shifting"; the same scheme WireGuard uses).

The bitmap is a ring of 64-bit blocks; moving the window forward clears the blocks it
passes instead of shifting bits. With ``blocks`` blocks the window guarantees the last
``(blocks - 1) * 64`` counters: a counter ``c`` is accepted when it is new and
``top - c < size`` (``top``: the highest counter accepted so far).

``check`` never changes anything and ``update`` is called only after the datagram has
authenticated, so forged datagrams can't move the window (WireGuard's order).
"""

from __future__ import annotations

BLOCK_BITS = 64
DEFAULT_WINDOW = 2048


class ReplayWindow:
    __slots__ = ("_blocks", "_n", "size", "top")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size <= 0 or size % BLOCK_BITS:
            raise ValueError(f"window size must be a positive multiple of {BLOCK_BITS}")
        self.size = size
        # One more block than the window, so the block being filled never overwrites the
        # oldest one still inside the window.
        self._n = size // BLOCK_BITS + 1
        self._blocks = [0] * self._n
        self.top = -1  # nothing accepted yet

    def check(self, counter: int) -> bool:
        """Whether ``counter`` is neither a replay nor too old."""
        if counter > self.top:
            return True
        if self.top - counter >= self.size:
            return False
        return not (self._blocks[(counter >> 6) % self._n] >> (counter & 63)) & 1

    def update(self, counter: int) -> bool:
        """Records ``counter``; False (and nothing recorded) when ``check`` would refuse it."""
        if not self.check(counter):
            return False
        index = counter >> 6
        if counter > self.top:
            current = self.top >> 6
            for step in range(1, min(index - current, self._n) + 1):
                self._blocks[(current + step) % self._n] = 0
            self.top = counter
        self._blocks[index % self._n] |= 1 << (counter & 63)
        return True
