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
local push_window = tonumber(ARGV[6])
local push_sub, push_gate = prefix .. 'pushsub:', prefix .. 'pushgate:'
local push_late = prefix .. 'pushlate:'
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
local pushes = {}  -- user, message id, ...: pushes owed now (see node.push.coalescing)
local subscribed = {}  -- user -> has a push subscription (looked up once per call)
local function owe_push(uid, mid)
  if mid == '0' then return end
  local sub = subscribed[uid]
  if sub == nil then
    sub = redis.call('EXISTS', push_sub .. uid) == 1
    subscribed[uid] = sub
  end
  if not sub then return end
  if redis.call('SET', push_gate .. uid, origin, 'NX', 'PX', push_window) then
    redis.call('DEL', push_late .. uid)
    pushes[#pushes + 1] = uid
    pushes[#pushes + 1] = mid
  else
    redis.call('SET', push_late .. uid, mid, 'PX', push_window * 3)
  end
end
local dormant, published = 0, 0
local pos = 7
for _ = 1, tonumber(ARGV[5]) do
  local n = tonumber(ARGV[pos])
  local users_at = pos + 1
  local payload = ARGV[users_at + n]
  local push_at = users_at + n + 1
  local push_mid, push_from, push_alt = ARGV[push_at], ARGV[push_at + 1], ARGV[push_at + 2]
  local n_entries = tonumber(ARGV[users_at + n + 4])
  local entries_at = users_at + n + 5
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
        if push_mid ~= '0' then
          owe_push(ARGV[i], ARGV[i] == push_from and push_alt or push_mid)
        end
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
return {dormant, published, pushes}
"""


@dataclass(slots=True, frozen=True)
class PushHint:
    """Which message a dormant member of a message group is owed a push about: the newest
    (`message_id`), or for its own sender the newest one someone else sent (`other_id`, 0 if
    none: nobody is pushed about their own messages)."""

    message_id: int
    sender_id: int
    other_id: int


@dataclass(slots=True, frozen=True)
class FanoutGroup:
    user_ids: Sequence[int]
    payload: bytes
    mailbox_entries: Sequence[bytes] = ()
    push: PushHint | None = None


@dataclass(slots=True, frozen=True)
class FanoutResult:
    dormant: int
    published: int
    # (user id, message id): dormant users with a push subscription whose coalescing window
    # this call opened (see node.push.coalescing)
    pushes: Sequence[tuple[int, int]] = ()


class Fanout:
    def __init__(
        self,
        redis: aioredis.Redis,
        incarnation: str,
        *,
        mailbox_max: int,
        mailbox_ttl: int,
        push_window: float = 5.0,
    ) -> None:
        self._redis = redis
        self._me = incarnation
        self._mailbox_max = mailbox_max
        self._mailbox_ttl = mailbox_ttl
        self._push_window_ms = max(1, int(push_window * 1000))
        self._fanout = redis.register_script(_FANOUT)

    async def fanout_many(self, groups: Sequence[FanoutGroup]) -> FanoutResult:
        """Several fan-outs in one script call, applied in order."""
        args: list[bytes | str | int] = [
            self._me,
            keys.PREFIX,
            self._mailbox_max,
            self._mailbox_ttl,
            len(groups),
            self._push_window_ms,
        ]
        for group in groups:
            args += [len(group.user_ids), *group.user_ids, group.payload]
            push = group.push or _NO_PUSH
            args += [push.message_id, push.sender_id, push.other_id]
            args += [len(group.mailbox_entries), *group.mailbox_entries]
        dormant, published, owed = await self._fanout(keys=[], args=args)
        pushes = [(int(owed[i]), int(owed[i + 1])) for i in range(0, len(owed), 2)]
        return FanoutResult(int(dormant), int(published), pushes)


_NO_PUSH = PushHint(0, 0, 0)
