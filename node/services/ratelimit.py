"""Per-user token buckets (per node): a burst of `burst` sends, refilled at `rate` per second."""

from __future__ import annotations

import time


class RateLimiter:
    _PRUNE_AT = 50_000

    def __init__(self, *, burst: int, rate: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._buckets: dict[int, tuple[float, float]] = {}  # user -> (tokens, updated at)

    def allow(self, user_id: int, cost: float = 1.0) -> bool:
        now = time.monotonic()
        tokens, updated = self._buckets.get(user_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if tokens < cost:
            self._buckets[user_id] = (tokens, now)
            return False
        self._buckets[user_id] = (tokens - cost, now)
        if len(self._buckets) > self._PRUNE_AT:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled completely (they hold no information)."""
        full_after = self._burst / self._rate
        self._buckets = {
            uid: (tokens, updated)
            for uid, (tokens, updated) in self._buckets.items()
            if now - updated < full_after
        }
