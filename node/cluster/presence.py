"""Who is online where: `presence:{u:<user>}` is a hash {node incarnation: devices connected
there}.

Entries of nodes this node knows to be dead (its `ClusterView`, refreshed by every heartbeat) are
dropped whenever a script meets them, so a node that died without cleaning up stops counting
within one heartbeat TTL. A script touches one user's hash only: one hash slot.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.actors.ports import ClusterUnreachable
from node.cluster import keys
from node.cluster.connection import REDIS_DOWN, RedisBackend
from node.cluster.liveness import ClusterView

# Set this node's device count for a user (0 removes it); returns {total before, total after}
# over nodes not known dead, so the caller can tell online/offline transitions.
_PRESENCE = """
local pkey, node, count = KEYS[1], ARGV[1], tonumber(ARGV[2])
local dead = {}
for i = 4, 3 + tonumber(ARGV[3]) do dead[ARGV[i]] = true end
local before = 0
local all = redis.call('HGETALL', pkey)
for i = 1, #all, 2 do
  if dead[all[i]] then
    redis.call('HDEL', pkey, all[i])
  else
    before = before + tonumber(all[i + 1])
  end
end
local mine = tonumber(redis.call('HGET', pkey, node) or '0')
if count > 0 then redis.call('HSET', pkey, node, count) else redis.call('HDEL', pkey, node) end
return {before, before - mine + count}
"""


class Presence:
    """Implements `node.actors.ports.PresenceRegistry` over Redis."""

    def __init__(self, backend: RedisBackend, incarnation: str, view: ClusterView) -> None:
        self._redis = backend.client
        self._me = incarnation
        self._view = view
        self._presence = backend.client.register_script(_PRESENCE)

    async def set_devices(self, user_id: int, local_devices: int) -> tuple[int, int]:
        """Record this node's device count for the user; (total before, total after)."""
        try:
            before, after = await self._presence(
                keys=[keys.presence(user_id)],
                args=[self._me, local_devices, *self._view.dead_args()],
            )
        except REDIS_DOWN as exc:
            raise ClusterUnreachable(str(exc)) from exc
        return int(before), int(after)

    async def online_among(self, user_ids: Sequence[int]) -> list[int]:
        """Which of these users have a device connected to a node not known dead (best
        effort)."""
        ids = list(user_ids)
        if not ids:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for uid in ids:
                    pipe.hkeys(keys.presence(uid))
                holders = await pipe.execute()
        except REDIS_DOWN as exc:
            raise ClusterUnreachable(str(exc)) from exc
        dead = {node.encode() for node in self._view.dead}
        return [uid for uid, nodes in zip(ids, holders, strict=True) if set(nodes) - dead]
