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

A dormant member with a push subscription (`pushsub:{u:<user>}`) is owed a push about the group's
message when the fan-out can take its push gate (`node.push.coalescing`): the result lists those
pushes. Every key of one user carries the user's hash tag, so the gate is taken by one small
script on the user's slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from node.cluster import keys
from node.cluster.connection import RedisBackend
from node.cluster.liveness import ClusterView
from node.cluster.scripts import SlotScript

# Owe a push to a dormant user (KEYS: its pushsub, pushgate and pushlate keys): nothing without a
# subscription; the gate taken now (SET NX, the window as expiry, holding this node) -> owed;
# else the message is left as the late one. ARGV: this node, window ms, message id.
# Returns 1 when the push is owed now.
_OWE_PUSH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[3])
  return 1
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', tonumber(ARGV[2]) * 3)
return 0
"""

# One Redis, a whole batch, with no KEYS: a group's members come as one argument (their ids in
# decimal, comma-separated) and the script builds each user's keys from the templates given
# (prefix .. id .. suffix; the same names `node.cluster.keys` makes), so a member costs a few bytes
# of one argument instead of six arguments, and only the keys a member needs are made (its
# mailbox and push keys only when it is dormant). Ids stay strings in Lua (its numbers are
# doubles: no precision lost past 2^53). This is for one Redis only: on a Redis Cluster a script
# must name its keys (and would cross slots), see `_sharded`.
# ARGV: origin, mailbox max and ttl, inbox channel prefix and suffix, push window ms, key
# templates (presence, mailbox, pushsub, pushgate, pushlate: prefix and suffix each), dead nodes
# (count first), groups (count first; each: members, payload, push message id, its sender, the
# newest message of someone else (0: none), entry count, entries).
# Returns {dormant, published, pushes owed (user, message id, ...)}.
_FANOUT = """
local origin, mbox_max, mbox_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local inbox_prefix, inbox_suffix, push_window = ARGV[4], ARGV[5], tonumber(ARGV[6])
local pres_a, pres_b, mbox_a, mbox_b = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local sub_a, sub_b, gate_a, gate_b = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local late_a, late_b = ARGV[15], ARGV[16]
local dead = {}
local at = 18 + tonumber(ARGV[17])
for i = 18, at - 1 do dead[ARGV[i]] = true end
local holders = {}  -- user -> other nodes holding its devices (false: dormant)
local function nodes_of(u)
  local known = holders[u]
  if known ~= nil then return known end
  local pkey = pres_a .. u .. pres_b
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
local pushes = {}  -- user, message id, ...: pushes owed now (see node.push.coalescing)
local subscribed = {}  -- user -> has a push subscription (looked up once per call)
local function owe_push(u, mid)
  if mid == '0' then return end
  local sub = subscribed[u]
  if sub == nil then
    sub = redis.call('EXISTS', sub_a .. u .. sub_b) == 1
    subscribed[u] = sub
  end
  if not sub then return end
  if redis.call('SET', gate_a .. u .. gate_b, origin, 'NX', 'PX', push_window) then
    redis.call('DEL', late_a .. u .. late_b)
    pushes[#pushes + 1] = u
    pushes[#pushes + 1] = mid
  else
    redis.call('SET', late_a .. u .. late_b, mid, 'PX', push_window * 3)
  end
end
local dormant, published = 0, 0
local groups = tonumber(ARGV[at])
at = at + 1
for _ = 1, groups do
  local members, payload = ARGV[at], ARGV[at + 1]
  local push_mid, push_from, push_alt = ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local n_entries = tonumber(ARGV[at + 5])
  local entries_at = at + 6
  local seen = {}
  for u in string.gmatch(members, '%d+') do
    local nodes = nodes_of(u)
    if nodes == false then
      if n_entries > 0 then
        local mkey = mbox_a .. u .. mbox_b
        redis.call('RPUSH', mkey, unpack(ARGV, entries_at, entries_at + n_entries - 1))
        redis.call('LTRIM', mkey, -mbox_max, -1)
        redis.call('EXPIRE', mkey, mbox_ttl)
        dormant = dormant + 1
        if push_mid ~= '0' then
          owe_push(u, u == push_from and push_alt or push_mid)
        end
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
return {dormant, published, pushes}
"""


def _key_template(make: Callable[[int], str]) -> tuple[str, str]:
    """The text before and after the user id in the keys `make` names (checked both ways)."""
    probe = 987654321
    name = make(probe)
    head, found, tail = name.rpartition(str(probe))
    if not found or make(7) != f"{head}7{tail}":
        raise ValueError(f"no key template in {name!r}")
    return head, tail


# the per-user key names the script builds (see `node.cluster.keys`)
_KEY_TEMPLATES: tuple[str, ...] = tuple(
    part
    for make in (
        keys.presence,
        keys.mailbox,
        keys.push_subscribed,
        keys.push_gate,
        keys.push_late,
    )
    for part in _key_template(make)
)


@dataclass(slots=True, frozen=True)
class PushHint:
    """Which message a dormant member of a message group is owed a push about: the newest
    (`message_id`), or for its own sender the newest one someone else sent (`other_id`, 0 if
    none: nobody is pushed about their own messages)."""

    message_id: int
    sender_id: int
    other_id: int

    def for_user(self, user_id: int) -> int:
        return self.other_id if user_id == self.sender_id else self.message_id


_NO_PUSH = PushHint(0, 0, 0)


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
        backend: RedisBackend,
        incarnation: str,
        view: ClusterView,
        *,
        mailbox_max: int,
        mailbox_ttl: int,
        push_window: float = 5.0,
    ) -> None:
        self._backend = backend
        self._redis = backend.client
        self._me = incarnation
        self._view = view
        self._mailbox_max = mailbox_max
        self._mailbox_ttl = mailbox_ttl
        self._push_window_ms = max(1, int(push_window * 1000))
        self._script = backend.client.register_script(_FANOUT)
        self._owe_push = SlotScript(backend, _OWE_PUSH)

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
        args: list[bytes | str | int] = [
            self._me,
            self._mailbox_max,
            self._mailbox_ttl,
            keys.INBOX_PREFIX,
            keys.INBOX_SUFFIX,
            self._push_window_ms,
            *_KEY_TEMPLATES,
            *self._view.dead_args(),
            len(groups),
        ]
        for group in groups:
            push = group.push or _NO_PUSH
            args += [
                ",".join(map(str, group.user_ids)),
                group.payload,
                push.message_id,
                push.sender_id,
                push.other_id,
                len(group.mailbox_entries),
                *group.mailbox_entries,
            ]
        dormant, published, owed = await self._script(args=args)
        pushes = [(int(owed[i]), int(owed[i + 1])) for i in range(0, len(owed), 2)]
        return FanoutResult(int(dormant), int(published), pushes)

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
        owing: list[tuple[int, int]] = []  # (user, message) for dormant members of push groups
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
                            if group.push is not None and group.push.message_id:
                                owing.append((uid, group.push.for_user(uid)))
                    else:
                        targets.update(dict.fromkeys(nodes))
                for node in targets:
                    pipe.spublish(keys.inbox(node), group.payload)
                published += len(targets)
            if len(pipe):
                await pipe.execute()
        return FanoutResult(dormant, published, await self._pushes_owed(owing))

    async def _pushes_owed(self, owing: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Take the push gates of these dormant users (one small script per user, on its
        slot, pipelined): the pushes owed now."""
        owing = [(uid, mid) for uid, mid in owing if mid]
        flags = await self._owe_push.run(
            [(_push_keys(uid), [self._me, self._push_window_ms, mid]) for uid, mid in owing]
        )
        return [pair for pair, owed in zip(owing, flags, strict=True) if owed]

    def _box(self, pipe: Any, user_id: int, entries: Sequence[bytes]) -> None:
        """Append to a dormant user's mailbox (in the pipeline)."""
        key = keys.mailbox(user_id)
        pipe.rpush(key, *entries)
        pipe.ltrim(key, -self._mailbox_max, -1)
        pipe.expire(key, self._mailbox_ttl)


def _push_keys(user_id: int) -> list[str]:
    return [keys.push_subscribed(user_id), keys.push_gate(user_id), keys.push_late(user_id)]
