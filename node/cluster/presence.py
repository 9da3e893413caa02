"""Who is online where: `presence:{u:<user>}` is a hash {node incarnation: devices connected
there}.

Entries of nodes this node knows to be dead (its `ClusterView`, refreshed by every heartbeat) are
dropped whenever a script meets them, so a node that died without cleaning up stops counting
within one heartbeat TTL. Registrations of many users go together (`set_many`): on one Redis one
script call for all of them, on a Redis Cluster one call per user (one hash slot each),
pipelined, so a connect storm costs a round trip per batch, not per user.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.actors.ports import ClusterUnreachable
from node.cluster import keys
from node.cluster.connection import REDIS_DOWN, RedisBackend
from node.cluster.liveness import ClusterView
from node.cluster.scripts import SlotScript

# Set this node's device count for each user of KEYS (0 removes it). ARGV: this node, the dead
# nodes (count first), then one count per key. Returns {total before, total after, ...}, one pair
# per key, over nodes not known dead, so the caller can tell online/offline transitions.
_PRESENCE = """
local node = ARGV[1]
local dead = {}
local at = 3 + tonumber(ARGV[2])
for i = 3, at - 1 do dead[ARGV[i]] = true end
local out = {}
for k = 1, #KEYS do
  local pkey, count = KEYS[k], tonumber(ARGV[at + k - 1])
  local before, mine = 0, 0
  local all = redis.call('HGETALL', pkey)
  for i = 1, #all, 2 do
    if dead[all[i]] then
      redis.call('HDEL', pkey, all[i])
    else
      local n = tonumber(all[i + 1])
      before = before + n
      if all[i] == node then mine = n end
    end
  end
  if count > 0 then redis.call('HSET', pkey, node, count) else redis.call('HDEL', pkey, node) end
  out[#out + 1] = before
  out[#out + 1] = before - mine + count
end
return out
"""


class Presence:
    """Implements `node.actors.ports.PresenceRegistry` over Redis, one call per request (see
    `node.cluster.registrations` for the batched front the user actors use)."""

    def __init__(self, backend: RedisBackend, incarnation: str, view: ClusterView) -> None:
        self._backend = backend
        self._redis = backend.client
        self._me = incarnation
        self._view = view
        self._presence = SlotScript(backend, _PRESENCE)

    async def set_devices(self, user_id: int, local_devices: int) -> tuple[int, int]:
        """Record this node's device count for the user; (total before, total after)."""
        return (await self.set_many([(user_id, local_devices)]))[0]

    async def set_many(self, counts: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """`set_devices` for many users at once: (total before, total after) for each, in order.
        A user listed twice is applied in order."""
        if not counts:
            return []
        dead = self._view.dead_args()
        try:
            if self._backend.sharded or len(counts) == 1:
                replies = await self._presence.run(
                    [([keys.presence(uid)], [self._me, *dead, n]) for uid, n in counts]
                )
                flat = [value for reply in replies for value in reply]
            else:
                flat = (
                    await self._presence.run(
                        [
                            (
                                [keys.presence(uid) for uid, _ in counts],
                                [self._me, *dead, *(n for _, n in counts)],
                            )
                        ]
                    )
                )[0]
        except REDIS_DOWN as exc:
            raise ClusterUnreachable(str(exc)) from exc
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

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
