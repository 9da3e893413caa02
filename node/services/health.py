"""Is this node able to serve? PostgreSQL and Redis must both answer, and every part of the node
(its supervised loops) must be running."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from node.cluster.connection import RedisClient
from node.storage import Storage

_PROBE_TIMEOUT = 2.0


class HealthService:
    def __init__(
        self,
        storage: Storage,
        redis: RedisClient,
        node_id: str,
        failing_parts: Callable[[], list[str]],
    ) -> None:
        self._storage = storage
        self._redis = redis
        self._node_id = node_id
        self._failing_parts = failing_parts

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body). Healthy: {"status": "ok", "node_id"}; otherwise
        {"status": "unavailable", "node_id", "failing": [...]} naming each dependency down
        (`postgres`, `redis`) and each part of the node that is not running (e.g. `commits`)."""
        postgres, redis = await asyncio.gather(
            self._probe(self._storage.ping()), self._probe(self._redis.ping())
        )
        failing = [name for name, ok in (("postgres", postgres), ("redis", redis)) if not ok]
        failing += self._failing_parts()
        if not failing:
            return True, {"status": "ok", "node_id": self._node_id}
        return False, {"status": "unavailable", "node_id": self._node_id, "failing": failing}

    @staticmethod
    async def _probe(awaitable: Any) -> bool:
        try:
            await asyncio.wait_for(awaitable, _PROBE_TIMEOUT)
        except Exception:
            return False
        return True
