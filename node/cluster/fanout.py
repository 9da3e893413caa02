"""Redis side of delivery: publish to the nodes holding members' devices, or append to the
mailboxes of members with no device anywhere.

`fanout_many` takes a list of groups (`Outbound` sends everything waiting) and applies them in
order: for each group's members it looks at the nodes holding their devices (skipping nodes known
dead, see `node.cluster.liveness`); a member with none is *dormant* and the group's entries are
appended to its mailbox list; every other node involved gets the group's envelope once on its
inbox. The node that calls it delivers to its own devices in-process and is never published to.

The script touches one user's presence hash and mailbox at a time, and all the keys of one call
share a hash slot. On one Redis the whole batch is one script call that also publishes. On a
Redis Cluster there is one call per slot (pipelined, each shard in one round trip) returning the
nodes to publish to, then one sharded publish per group and node, on that node's inbox shard.

Presence entries are described in `node.cluster.presence`, mailboxes in `node.cluster.mailbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.cluster import keys
from node.cluster.connection import RedisBackend
from node.cluster.liveness import ClusterView
from node.cluster.scripts import Call, SlotScript

# KEYS: presence and mailbox of each user of the call. ARGV: origin, mailbox max and ttl, the
# publish command ('' = return the targets instead), inbox prefix and suffix, dead nodes (count
# first), groups (count first; each: member count, members as KEYS pair numbers, payload, entry
# count, entries). Returns {dormant, published, then per group unless publishing: count, nodes}.
_FANOUT = """
local origin, mbox_max, mbox_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local publish, inbox_prefix, inbox_suffix = ARGV[4], ARGV[5], ARGV[6]
local dead = {}
local at = 8 + tonumber(ARGV[7])
for i = 8, at - 1 do dead[ARGV[i]] = true end
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
local out = {0, 0}
local groups = tonumber(ARGV[at])
at = at + 1
for _ = 1, groups do
  local n = tonumber(ARGV[at])
  local payload = ARGV[at + n + 1]
  local n_entries = tonumber(ARGV[at + n + 2])
  local entries_at = at + n + 3
  local seen, targets = {}, {}
  for i = at + 1, at + n do
    local u = tonumber(ARGV[i])
    local nodes = nodes_of(u)
    if nodes == false then
      if n_entries > 0 then
        local mkey = KEYS[2 * u]
        redis.call('RPUSH', mkey, unpack(ARGV, entries_at, entries_at + n_entries - 1))
        redis.call('LTRIM', mkey, -mbox_max, -1)
        redis.call('EXPIRE', mkey, mbox_ttl)
        out[1] = out[1] + 1
      end
    else
      for _, node in ipairs(nodes) do
        if not seen[node] then
          seen[node] = true
          targets[#targets + 1] = node
        end
      end
    end
  end
  if publish ~= '' then
    for _, node in ipairs(targets) do
      redis.call(publish, inbox_prefix .. node .. inbox_suffix, payload)
    end
    out[2] = out[2] + #targets
  else
    out[#out + 1] = #targets
    for _, node in ipairs(targets) do out[#out + 1] = node end
  end
  at = entries_at + n_entries
end
return out
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
        self._me = incarnation
        self._view = view
        self._mailbox_max = mailbox_max
        self._mailbox_ttl = mailbox_ttl
        self._inline = not backend.sharded  # one Redis: the script publishes itself
        self._script = SlotScript(backend, _FANOUT)

    async def fanout_many(self, groups: Sequence[FanoutGroup]) -> FanoutResult:
        """Several fan-outs, applied in order (per target node, envelopes are published in
        the order of `groups`). Raises RedisError when a part failed; calling again with the
        same groups is harmless (clients drop a seq they have seen; a mailbox keeps one frame
        per seq)."""
        calls, members_of = self._calls(groups)
        replies = await self._script.run(calls)
        dormant = sum(int(reply[0]) for reply in replies)
        published = sum(int(reply[1]) for reply in replies)
        if not self._inline:
            published += await self._publish(groups, _targets(replies, members_of, len(groups)))
        return FanoutResult(dormant, published)

    def _calls(self, groups: Sequence[FanoutGroup]) -> tuple[list[Call], list[list[int]]]:
        """One script call per hash slot (one in all on one Redis), and for each call the
        groups it carries, in order."""
        users = list(dict.fromkeys(uid for group in groups for uid in group.user_ids))
        slots = self._backend.group_by_slot([keys.presence(uid) for uid in users])
        call_of: dict[int, tuple[int, int]] = {}  # user -> (call, its KEYS pair number)
        for call, positions in enumerate(slots):
            for number, position in enumerate(positions, start=1):
                call_of[users[position]] = (call, number)
        carried: list[list[tuple[int, list[int]]]] = [[] for _ in slots]
        for index, group in enumerate(groups):
            members: dict[int, list[int]] = {}
            for uid in group.user_ids:
                call, number = call_of[uid]
                members.setdefault(call, []).append(number)
            for call, numbers in members.items():
                carried[call].append((index, numbers))
        calls: list[Call] = []
        for positions, in_call in zip(slots, carried, strict=True):
            call_keys: list[str] = []
            for position in positions:
                call_keys += [keys.presence(users[position]), keys.mailbox(users[position])]
            args: list[bytes | str | int] = [
                self._me,
                self._mailbox_max,
                self._mailbox_ttl,
                self._backend.publish_command if self._inline else "",
                keys.INBOX_PREFIX,
                keys.INBOX_SUFFIX,
                *self._view.dead_args(),
                len(in_call),
            ]
            for index, numbers in in_call:
                group = groups[index]
                args += [len(numbers), *numbers, group.payload if self._inline else b""]
                args += [len(group.mailbox_entries), *group.mailbox_entries]
            calls.append((call_keys, args))
        return calls, [[index for index, _ in in_call] for in_call in carried]

    async def _publish(self, groups: Sequence[FanoutGroup], targets: list[list[str]]) -> int:
        """Each group's envelope once to each node that needs it, on that node's shard."""
        count = 0
        async with self._backend.client.pipeline(transaction=False) as pipe:
            for group, nodes in zip(groups, targets, strict=True):
                for node in nodes:
                    pipe.spublish(keys.inbox(node), group.payload)
                    count += 1
            if count:
                await pipe.execute()
        return count


def _targets(replies: list[Any], members_of: list[list[int]], count: int) -> list[list[str]]:
    """The nodes each group goes to, merged over the calls of every slot its members are in."""
    targets: list[dict[str, None]] = [{} for _ in range(count)]
    for reply, carried in zip(replies, members_of, strict=True):
        at = 2
        for index in carried:
            n = int(reply[at])
            for node in reply[at + 1 : at + 1 + n]:
                targets[index][node.decode() if isinstance(node, bytes) else str(node)] = None
            at += 1 + n
    return [list(nodes) for nodes in targets]
