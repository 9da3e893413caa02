"""How many login and registration attempts an account and a client address may make, across
the cluster.

Moving windows from the `limits` library, kept in the node's Redis, so every node of a cluster
counts the same attempts. Each attempt counts (a right password too) and is counted before any
password is hashed; an attempt over a limit is refused with 429 `rate_limited` and a
`Retry-After` saying when the oldest attempt in the full window leaves it. The defaults
(settings `login_limit_account`, `login_limit_address`, `register_limit_address`):

- login, per account (the username as typed, case-insensitive, whether or not it exists, so the
  answer tells nothing about existence): 10 a minute and 100 an hour;
- login, per client address: 30 a minute and 300 an hour;
- registration, per client address: 10 a minute and 50 an hour; per username: the login limits.

So a password guesser gets at most 100 guesses an hour on one account (0.028/s sustained) and 300
an hour from one address (0.083/s). The price of a per-account limit is that guessing against an
account also holds its owner off for the rest of the window; the per-address limit on the
guesser usually bites first.

When Redis cannot be reached the attempt is let through (and logged): the hashing gate
(`node.services.hashing`) still bounds what it costs, and logins should not fail with Redis.
`MESSENGER_AUTH_THROTTLE=false` turns all of this off.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio.cluster import RedisCluster

from node import errors, metrics
from node.cluster.connection import REDIS_DOWN, RedisClient
from node.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "messenger:limits"


class AuthThrottle:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._enabled = settings.auth_throttle
        # no storage at all when off (on a Redis Cluster it would hold a client of its own)
        self._limiter = MovingWindowRateLimiter(_storage(redis)) if self._enabled else None
        self._login_account = parse_many(settings.login_limit_account)
        self._login_address = parse_many(settings.login_limit_address)
        self._register_address = parse_many(settings.register_limit_address)

    async def login(self, username: str, address: str) -> None:
        """Count a login attempt; `errors.RateLimited` (with `retry_after`) when over a limit."""
        await self._hit(
            ("login:address", address, self._login_address),
            ("login:account", username.lower(), self._login_account),
        )

    async def register(self, username: str, address: str) -> None:
        """Count a registration attempt; `errors.RateLimited` when over a limit."""
        await self._hit(
            ("register:address", address, self._register_address),
            ("register:account", username.lower(), self._login_account),
        )

    async def _hit(self, *checks: tuple[str, str, list[RateLimitItem]]) -> None:
        if self._limiter is None:
            return
        try:
            for scope, key, items in checks:
                for item in items:
                    if not await self._limiter.hit(item, scope, key):
                        metrics.AUTH_THROTTLED.labels(scope=scope).inc()
                        log.info("auth.throttled", extra={"scope": scope, "limit": str(item)})
                        raise errors.RateLimited(
                            "too many attempts, retry later",
                            retry_after=await self._retry_after(item, scope, key),
                        )
        except REDIS_DOWN as exc:
            metrics.REDIS_ERRORS.labels(op="auth_throttle").inc()
            log.warning("auth.throttle_unavailable", extra={"error": str(exc)})

    async def _retry_after(self, item: RateLimitItem, scope: str, key: str) -> int:
        assert self._limiter is not None
        stats = await self._limiter.get_window_stats(item, scope, key)
        return max(1, math.ceil(stats.reset_time - time.time()))


def _storage(redis: RedisClient) -> Storage:
    """The limits' storage on the node's own Redis client: its connection pool on one Redis,
    the cluster client itself on a Redis Cluster (each limit is one key: one hash slot)."""
    if isinstance(redis, RedisCluster):
        return _ClusterStorage(redis)
    return RedisStorage(
        "async+redis://",
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        connection_pool=redis.connection_pool,  # type: ignore[arg-type]
    )


class _ClusterStorage(RedisClusterStorage):
    """limits' Redis Cluster storage over a client the node already has and closes (the
    library would otherwise make a cluster client of its own that nothing closes): the bridge
    is pointed at it where the library would build one."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        super().__init__(
            "async+redis+cluster://unused:1", implementation="redispy", key_prefix=KEY_PREFIX
        )

    def configure_bridge(self) -> None:
        self.bridge.storage = self._client  # type: ignore[attr-defined]
        self.bridge.connection_getter = lambda _readonly: self._client  # type: ignore[attr-defined]
