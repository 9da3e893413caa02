"""Redis side of delivery: publish to the nodes holding members' devices, or append to the
mailboxes of members with no device anywhere.

Fan-out runs as one script call for a list of groups (`fanout_many`; `Outbound` sends everything
waiting), atomically and in order: for each group's members it looks at the live nodes holding
their devices; a member with none is *dormant* and the group's entries are appended to its
mailbox list; every other node involved gets the group's envelope once on its inbox. The node that
calls it delivers to its own devices in-process and is never published to.

Presence entries are described in `node.cluster.presence`, mailboxes in `node.cluster.mailbox`.

Note: the scripts compute key names from ids, so a Redis Cluster deployment is not supported
(one Redis, or a primary with replicas).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from node.cluster import keys

_FANOUT = """
local origin, prefix = ARGV[1], ARGV[2]
local mbox_max, mbox_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local live_nodes = {}  -- user -> list of other live nodes holding its devices (nil: dormant)
local function nodes_of(uid)
  local known = live_nodes[uid]
  if known ~= nil then return known end
  local pkey = prefix .. 'presence:' .. uid
  local found, live = {}, 0
  for _, node in ipairs(redis.call('HKEYS', pkey)) do
    if redis.call('EXISTS', prefix .. 'alive:' .. node) == 1 then
      live = live + 1
      if node ~= origin then found[#found + 1] = node end
    else
      redis.call('HDEL', pkey, node)
    end
  end
  if live == 0 then found = false end
  live_nodes[uid] = found
  return found
end
local dormant, published = 0, 0
local pos = 6
for _ = 1, tonumber(ARGV[5]) do
  local n = tonumber(ARGV[pos])
  local users_at = pos + 1
  local payload = ARGV[users_at + n]
  local n_entries = tonumber(ARGV[users_at + n + 1])
  local entries_at = users_at + n + 2
  local targets = {}
  for i = users_at, users_at + n - 1 do
    local nodes = nodes_of(ARGV[i])
    if nodes == false then
      if n_entries > 0 then
        local mkey = prefix .. 'mbox:' .. ARGV[i]
        redis.call('RPUSH', mkey, unpack(ARGV, entries_at, entries_at + n_entries - 1))
        redis.call('LTRIM', mkey, -mbox_max, -1)
        redis.call('EXPIRE', mkey, mbox_ttl)
        dormant = dormant + 1
      end
    else
      for _, node in ipairs(nodes) do targets[node] = true end
    end
  end
  for node, _ in pairs(targets) do
    redis.call('PUBLISH', prefix .. 'inbox:' .. node, payload)
    published = published + 1
  end
  pos = entries_at + n_entries
end
return {dormant, published}
"""


@dataclass(slots=True, frozen=True)
class FanoutGroup:
    user_ids: Sequence[int]
    payload: bytes
    mailbox_entries: Sequence[bytes] = ()


@dataclass(slots=True, frozen=True)
class FanoutResult:
    dormant: int
    published: int


class Fanout:
    def __init__(
        self, redis: aioredis.Redis, incarnation: str, *, mailbox_max: int, mailbox_ttl: int
    ) -> None:
        self._redis = redis
        self._me = incarnation
        self._mailbox_max = mailbox_max
        self._mailbox_ttl = mailbox_ttl
        self._fanout = redis.register_script(_FANOUT)

    async def fanout_many(self, groups: Sequence[FanoutGroup]) -> FanoutResult:
        """Several fan-outs in one script call, applied in order."""
        args: list[bytes | str | int] = [
            self._me,
            keys.PREFIX,
            self._mailbox_max,
            self._mailbox_ttl,
            len(groups),
        ]
        for group in groups:
            args += [len(group.user_ids), *group.user_ids, group.payload]
            args += [len(group.mailbox_entries), *group.mailbox_entries]
        dormant, published = await self._fanout(keys=[], args=args)
        return FanoutResult(int(dormant), int(published))
