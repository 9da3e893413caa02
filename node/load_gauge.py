"""How fast something arrives: the signal batching uses to wait only under load."""

from __future__ import annotations

import time


class LoadGauge:
    """Arrivals per second over the last `window` seconds (pure bookkeeping, no I/O)."""

    __slots__ = ("_count", "_start", "_window", "rate")

    def __init__(self, window: float = 0.1) -> None:
        self._window = window
        self._start = time.monotonic()
        self._count = 0
        self.rate = 0.0

    def arrived(self) -> None:
        self._count += 1
        now = time.monotonic()
        elapsed = now - self._start
        if elapsed >= self._window:
            self.rate = self._count / elapsed
            self._start, self._count = now, 0

    def current(self) -> float:
        """The rate, decayed to 0 when nothing arrived for a whole window."""
        return self.rate if time.monotonic() - self._start < 2 * self._window else 0.0
