"""Who is online where: `presence:<user>` is a hash {node incarnation: devices connected there}.

Entries of nodes whose membership key lapsed are dropped whenever a script meets them, so a node
that died without cleaning up stops counting within one heartbeat TTL.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from node.actors.ports import ClusterUnreachable
from node.cluster import keys

# Set this node's device count for a user (0 removes it); returns {total before, total after}
# over live nodes, so the caller can tell online/offline transitions.
_PRESENCE = """
local pkey, node, count, prefix = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local before = 0
local all = redis.call('HGETALL', pkey)
for i = 1, #all, 2 do
  if redis.call('EXISTS', prefix .. 'alive:' .. all[i]) == 1 then
    before = before + tonumber(all[i + 1])
  else
    redis.call('HDEL', pkey, all[i])
  end
end
local mine = tonumber(redis.call('HGET', pkey, node) or '0')
if count > 0 then redis.call('HSET', pkey, node, count) else redis.call('HDEL', pkey, node) end
return {before, before - mine + count}
"""


class Presence:
    """Implements `node.actors.ports.PresenceRegistry` over Redis."""

    def __init__(self, redis: aioredis.Redis, incarnation: str) -> None:
        self._redis = redis
        self._me = incarnation
        self._presence = redis.register_script(_PRESENCE)

    async def set_devices(self, user_id: int, local_devices: int) -> tuple[int, int]:
        """Record this node's device count for the user; (total before, total after)."""
        try:
            before, after = await self._presence(
                keys=[keys.presence(user_id)], args=[self._me, local_devices, keys.PREFIX]
            )
        except (RedisError, OSError) as exc:
            raise ClusterUnreachable(str(exc)) from exc
        return int(before), int(after)

    async def online_among(self, user_ids: Sequence[int]) -> list[int]:
        """Which of these users have a device connected to a live node (best effort)."""
        ids = list(user_ids)
        if not ids:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for uid in ids:
                    pipe.hlen(keys.presence(uid))
                counts = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ClusterUnreachable(str(exc)) from exc
        return [uid for uid, count in zip(ids, counts, strict=True) if count]
