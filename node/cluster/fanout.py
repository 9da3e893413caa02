"""Redis side of delivery: publish to the nodes holding members' devices, or append to the
mailboxes of members with no device anywhere.

`fanout_many` takes a list of groups (`Outbound` sends everything waiting) and applies them in
order: for each group's members it looks at the nodes holding their devices (skipping nodes known
dead, see `node.cluster.liveness`, and dropping their entries); a member with none is *dormant*
and the group's entries are appended to its mailbox list; every other node involved gets the
group's envelope once on its inbox. The node that calls it delivers to its own devices
in-process and is never published to.

Two ways, one outcome, chosen by what is cheap where (measured, docs/SCALING.md):

- one Redis: the whole batch is one script call that reads presence, boxes and publishes (one
  round trip; the script's fixed cost, ~15 µs, is paid once per batch);
- a Redis Cluster: a script may only touch one hash slot, so it would pay that fixed cost once
  per member. Instead two pipelines: every member's presence (`HKEYS`, routed per shard, in
  parallel), then the mailbox appends and one sharded publish per group and node, on that
  node's inbox shard. About 2 µs of Redis CPU a member instead of 20. Not atomic, and it need
  not be: a mailbox is a cache (a reader checks it holds every seq, else reads PostgreSQL), and
  a message is stored before it is fanned out, so a device connecting meanwhile finds it in
  PostgreSQL.

Per target node, envelopes are published in the order of the groups (one connection per shard,
in order). Presence entries are described in `node.cluster.presence`, mailboxes in
`node.cluster.mailbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.cluster import keys
from node.cluster.connection import RedisBackend
from node.cluster.liveness import ClusterView

# One Redis, a whole batch. KEYS: presence and mailbox of each user of the batch. ARGV: origin,
# mailbox max and ttl, inbox channel prefix and suffix, dead nodes (count first), groups (count
# first; each: member count, members as KEYS pair numbers, payload, entry count, entries).
# Returns {dormant, published}.
_FANOUT = """
local origin, mbox_max, mbox_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local inbox_prefix, inbox_suffix = ARGV[4], ARGV[5]
local dead = {}
local at = 7 + tonumber(ARGV[6])
for i = 7, at - 1 do dead[ARGV[i]] = true end
local holders = {}  -- user -> other nodes holding its devices (false: dormant)
local function nodes_of(u)
  local known = holders[u]
  if known ~= nil then return known end
  local pkey = KEYS[2 * u - 1]
  local found, live = {}, 0
  for _, node in ipairs(redis.call('HKEYS', pkey)) do
    if dead[node] then
      redis.call('HDEL', pkey, node)
    else
      live = live + 1
      if node ~= origin then found[#found + 1] = node end
    end
  end
  if live == 0 then found = false end
  holders[u] = found
  return found
end
local dormant, published = 0, 0
local groups = tonumber(ARGV[at])
at = at + 1
for _ = 1, groups do
  local n = tonumber(ARGV[at])
  local payload = ARGV[at + n + 1]
  local n_entries = tonumber(ARGV[at + n + 2])
  local entries_at = at + n + 3
  local seen = {}
  for i = at + 1, at + n do
    local u = tonumber(ARGV[i])
    local nodes = nodes_of(u)
    if nodes == false then
      if n_entries > 0 then
        local mkey = KEYS[2 * u]
        redis.call('RPUSH', mkey, unpack(ARGV, entries_at, entries_at + n_entries - 1))
        redis.call('LTRIM', mkey, -mbox_max, -1)
        redis.call('EXPIRE', mkey, mbox_ttl)
        dormant = dormant + 1
      end
    else
      for _, node in ipairs(nodes) do
        if not seen[node] then
          seen[node] = true
          redis.call('PUBLISH', inbox_prefix .. node .. inbox_suffix, payload)
          published = published + 1
        end
      end
    end
  end
  at = entries_at + n_entries
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
        self,
        backend: RedisBackend,
        incarnation: str,
        view: ClusterView,
        *,
        mailbox_max: int,
        mailbox_ttl: int,
    ) -> None:
        self._backend = backend
        self._redis = backend.client
        self._me = incarnation
        self._view = view
        self._mailbox_max = mailbox_max
        self._mailbox_ttl = mailbox_ttl
        self._script = backend.client.register_script(_FANOUT)

    async def fanout_many(self, groups: Sequence[FanoutGroup]) -> FanoutResult:
        """Several fan-outs, applied in order. Raises RedisError (or another of
        `connection.REDIS_DOWN`) when a part failed; calling again with the same groups is
        harmless (clients drop a seq they have seen; a mailbox keeps one frame per seq)."""
        if not groups:
            return FanoutResult(0, 0)
        if self._backend.sharded:
            return await self._sharded(groups)
        return await self._scripted(groups)

    async def _scripted(self, groups: Sequence[FanoutGroup]) -> FanoutResult:
        users = list(dict.fromkeys(uid for group in groups for uid in group.user_ids))
        number = {uid: n for n, uid in enumerate(users, start=1)}
        call_keys: list[str] = []
        for uid in users:
            call_keys += [keys.presence(uid), keys.mailbox(uid)]
        args: list[bytes | str | int] = [
            self._me,
            self._mailbox_max,
            self._mailbox_ttl,
            keys.INBOX_PREFIX,
            keys.INBOX_SUFFIX,
            *self._view.dead_args(),
            len(groups),
        ]
        for group in groups:
            args += [len(group.user_ids), *(number[uid] for uid in group.user_ids)]
            args += [group.payload, len(group.mailbox_entries), *group.mailbox_entries]
        dormant, published = await self._script(keys=call_keys, args=args)
        return FanoutResult(int(dormant), int(published))

    async def _sharded(self, groups: Sequence[FanoutGroup]) -> FanoutResult:
        users = list(dict.fromkeys(uid for group in groups for uid in group.user_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for uid in users:
                pipe.hkeys(keys.presence(uid))
            found: list[list[bytes]] = await pipe.execute()
        dead = self._view.dead
        holders: dict[int, list[str] | None] = {}  # None: dormant
        stale: list[tuple[int, str]] = []
        for uid, raw in zip(users, found, strict=True):
            names = [n.decode() for n in raw]
            live = [n for n in names if n not in dead]
            stale += [(uid, n) for n in names if n in dead]
            holders[uid] = [n for n in live if n != self._me] if live else None
        dormant = published = 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for uid, node in stale:
                pipe.hdel(keys.presence(uid), node)
            for group in groups:
                targets: dict[str, None] = {}
                for uid in group.user_ids:
                    nodes = holders[uid]
                    if nodes is None:
                        if group.mailbox_entries:
                            self._box(pipe, uid, group.mailbox_entries)
                            dormant += 1
                    else:
                        targets.update(dict.fromkeys(nodes))
                for node in targets:
                    pipe.spublish(keys.inbox(node), group.payload)
                published += len(targets)
            if len(pipe):
                await pipe.execute()
        return FanoutResult(dormant, published)

    def _box(self, pipe: Any, user_id: int, entries: Sequence[bytes]) -> None:
        key = keys.mailbox(user_id)
        pipe.rpush(key, *entries)
        pipe.ltrim(key, -self._mailbox_max, -1)
        pipe.expire(key, self._mailbox_ttl)
