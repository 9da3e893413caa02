"""Redis side of delivery: presence per node, publish-or-mailbox, and dormant mailboxes.

Presence: `presence:<user>` is a hash {node incarnation: devices connected there}. Entries of
nodes whose membership key lapsed are dropped whenever a script meets them.

Fan-out runs as one script call for a list of groups (`fanout_many`; `Outbound` sends everything
waiting), atomically and in order: for each group's members it looks at the live nodes holding
their devices; a member with none is *dormant* and the group's entries are appended to its
mailbox list; every other node involved gets the group's envelope once on its inbox. The node that
calls it delivers to its own devices in-process and is never published to.

Mailbox entries are `<chat_id>:<seq>:<frame>`, appended in seq order per chat (one writer per
chat). The list is a cache, not the record: it is capped at `mailbox_max` entries and expires;
`read_mailbox` tells which seqs it holds so that the reader can fall back to PostgreSQL for the
rest.

Note: the scripts compute key names from ids, so a Redis Cluster deployment is not supported
(one Redis, or a primary with replicas).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
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


@dataclass(slots=True, frozen=True)
class FanoutGroup:
    user_ids: Sequence[int]
    payload: bytes
    mailbox_entries: Sequence[bytes] = ()


@dataclass(slots=True, frozen=True)
class FanoutResult:
    dormant: int
    published: int


@dataclass(slots=True)
class MailboxContents:
    """What a dormant user's mailbox held when read: frames by chat and seq."""

    frames: dict[int, dict[int, bytes]]
    count: int

    def covers(self, chat_id: int, after_seq: int, upto_seq: int) -> bool:
        held = self.frames.get(chat_id)
        return held is not None and all(s in held for s in range(after_seq + 1, upto_seq + 1))

    def high_seqs(self) -> dict[int, int]:
        return {chat: max(seqs) for chat, seqs in self.frames.items() if seqs}


def mailbox_entry(chat_id: int, seq: int, frame: bytes) -> bytes:
    return b"%d:%d:" % (chat_id, seq) + frame


class Fanout:
    def __init__(
        self, redis: aioredis.Redis, incarnation: str, *, mailbox_max: int, mailbox_ttl: int
    ) -> None:
        self._redis = redis
        self._me = incarnation
        self._mailbox_max = mailbox_max
        self._mailbox_ttl = mailbox_ttl
        self._fanout = redis.register_script(_FANOUT)
        self._presence = redis.register_script(_PRESENCE)

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

    async def set_presence(self, user_id: int, local_devices: int) -> tuple[int, int]:
        """Record this node's device count for the user; (total before, total after)."""
        before, after = await self._presence(
            keys=[keys.presence(user_id)], args=[self._me, local_devices, keys.PREFIX]
        )
        return int(before), int(after)

    async def online_among(self, user_ids: Iterable[int]) -> list[int]:
        """Which of these users have a device connected to a live node (best effort)."""
        ids = list(user_ids)
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for uid in ids:
                pipe.hlen(keys.presence(uid))
            counts = await pipe.execute()
        return [uid for uid, count in zip(ids, counts, strict=True) if count]

    async def read_mailbox(self, user_id: int) -> MailboxContents:
        raw: list[bytes] = await self._redis.lrange(keys.mailbox(user_id), 0, -1)  # type: ignore[assignment]  # bytes: no decode_responses
        frames: dict[int, dict[int, bytes]] = defaultdict(dict)
        for entry in raw:
            chat, seq, frame = entry.split(b":", 2)
            frames[int(chat)][int(seq)] = frame
        return MailboxContents(frames=dict(frames), count=len(raw))

    async def trim_mailbox(self, user_id: int, consumed: int) -> None:
        """Drop the first `consumed` entries (those a device read and has acked since);
        entries appended later stay."""
        await self._redis.ltrim(keys.mailbox(user_id), consumed, -1)
