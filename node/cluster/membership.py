"""Node membership by heartbeats: `alive:<incarnation>` with a TTL, renewed every interval.

A node whose key lapsed is dead to the others: its leases may be taken and its presence entries
are dropped. When a beat finds its own key missing (Redis restarted empty, or this process was
paused past the TTL), `on_lost_memory` runs so that the node re-registers what it holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from node import metrics
from node.cluster import keys
from node.cluster.identity import NodeIdentity

log = logging.getLogger(__name__)


class Membership:
    def __init__(
        self,
        redis: aioredis.Redis,
        identity: NodeIdentity,
        *,
        interval: float,
        on_lost_memory: Callable[[], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self._identity = identity
        self._interval = interval
        self._ttl_ms = int(interval * 3 * 1000)
        self._on_lost_memory = on_lost_memory
        self.healthy = False

    async def beat(self) -> bool:
        """One heartbeat; True if the key was still there (nothing was forgotten)."""
        previous = await self._redis.set(
            keys.alive(self._identity.incarnation),
            self._identity.node_id,
            px=self._ttl_ms,
            get=True,
        )
        return previous is not None

    async def run(self) -> None:
        """Beat until cancelled. Redis errors are logged and retried at the next beat."""
        first = True
        while True:
            try:
                remembered = await self.beat()
                if not self.healthy:
                    log.info("membership.redis_ok", extra={"node": self._identity.incarnation})
                self.healthy = True
                if not remembered and not first:
                    log.warning(
                        "membership.redis_forgot", extra={"node": self._identity.incarnation}
                    )
                    await self._on_lost_memory()
                first = False
            except (RedisError, OSError) as exc:
                metrics.REDIS_ERRORS.labels(op="heartbeat").inc()
                if self.healthy:
                    log.warning("membership.redis_down", extra={"error": str(exc)})
                self.healthy = False
            await asyncio.sleep(self._interval)

    async def leave(self) -> None:
        try:
            await self._redis.delete(keys.alive(self._identity.incarnation))
        except (RedisError, OSError):
            pass

    async def is_alive(self, incarnation: str) -> bool:
        return bool(await self._redis.exists(keys.alive(incarnation)))
