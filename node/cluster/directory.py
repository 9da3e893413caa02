"""The ownership directory: which node owns which chat, as leases in Redis. It implements the
chat actors' `ChatOwnership` port (`node.actors.ports`).

A lease is `lease:{chat:<id>}` holding the owner's incarnation, with a TTL the owner renews every
third of it. A lease whose holder this node knows to be dead (its `ClusterView`: the holder's
heartbeat lapsed) may be taken at once; scripts read only the lease keys themselves, and each key
is its own hash slot. A lease Redis lost (restarted empty, or a failed-over master had not
replicated it) is simply free: the next claimant takes it, and a holder that still thinks it owns
the chat is refused by PostgreSQL's fencing epoch. Leases only say who *should* own; safety comes
from the fencing epoch in PostgreSQL (see `ChatStore.take_ownership`): a node that lost its lease
without noticing (paused, cut off) is refused by the database at its next write.

Locally each lease has a `valid_until` on the monotonic clock, set from the time a claim or
renewal was *sent*; an owner stops writing once it passes, even if Redis never answered. A process
paused past its TTL therefore sees its leases expired the moment it resumes.

Batched: claims, owner look-ups and releases of many chats go through a `Batcher` each, so the
requests of every chat activated (or looked up, or stopped) while a call is in flight share the
next call: one script call (one `MGET`) on one Redis, one pipeline of per-key calls on a Redis
Cluster (each lease key is its own slot), every shard in parallel. Renewal is one call for every
lease held. So activating N chats at once costs about N / max_batch round trips, and a quiet node
still pays one round trip per claim, at once. `calls` counts the round trips made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node import metrics
from node.actors.ports import Claim, HeldElsewhere, OwnershipUnavailable
from node.batching import Batcher, BatcherClosed
from node.cluster import keys
from node.cluster.connection import REDIS_DOWN, RedisBackend
from node.cluster.identity import NodeIdentity
from node.cluster.liveness import ClusterView
from node.cluster.scripts import SlotScript

log = logging.getLogger(__name__)

# Per key: GET the lease; free or held by a node known dead (ARGV[3]: count, then incarnations)
# -> take it; ours -> extend it. Returns, per key, 1 then the holder when we hold it now, 0 then
# the holder when another does (a flat array: ok1, holder1, ok2, holder2, ...).
_ACQUIRE = """
local dead = {}
for i = 4, 3 + tonumber(ARGV[3]) do dead[ARGV[i]] = true end
local out = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[2 * i - 1] = 1; out[2 * i] = holder
  elseif holder and not dead[holder] then
    out[2 * i - 1] = 0; out[2 * i] = holder
  else
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[2 * i - 1] = 1; out[2 * i] = ARGV[1]
  end
end
return out
"""

# One Redis. For each key: ours -> extend; missing (Redis forgot) -> take back; another's ->
# lost. Returns one flag per key: 1 kept, 0 lost.
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2]); out[i] = 1
  elseif not holder then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2]); out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# Delete each key that is still ours; returns how many were.
_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
"""


@dataclass(slots=True)
class Lease:
    """A chat held by this node (a `Claim` for the chat actor)."""

    key: str
    valid_until: float
    on_lost: Callable[[], None]
    lost: bool = field(default=False)

    def valid(self) -> bool:
        return not self.lost and time.monotonic() < self.valid_until


_REDIS_DOWN = REDIS_DOWN
_UNAVAILABLE: tuple[type[BaseException], ...] = (*REDIS_DOWN, BatcherClosed)

# (ok, holder, sent_at) for one claim
_Claimed = tuple[bool, str, float]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Directory:
    def __init__(
        self,
        backend: RedisBackend,
        identity: NodeIdentity,
        view: ClusterView,
        *,
        ttl: float,
        max_batch: int = 1000,
        parallel: int = 2,
    ) -> None:
        self._backend = backend
        self._redis = backend.client
        self._me = identity.incarnation
        self._view = view
        self._ttl = ttl
        self._ttl_ms = int(ttl * 1000)
        self._leases: dict[str, Lease] = {}
        self._releasing: dict[str, asyncio.Future[None]] = {}  # key -> its release is done
        self._acquire = SlotScript(backend, _ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = SlotScript(backend, _RELEASE)
        shape: dict[str, Any] = {
            "max_batch": max_batch,
            "parallel": parallel,
            "whole_batch": _REDIS_DOWN,
        }
        self._claims = Batcher[str, _Claimed](self._serve_claims, name="lease_claims", **shape)
        self._owners = Batcher[str, "str | None"](self._serve_owners, name="lease_owners", **shape)
        self._releases = Batcher[str, None](self._serve_releases, name="lease_releases", **shape)

    def __len__(self) -> int:
        return len(self._leases)

    @property
    def calls(self) -> int:
        """Redis round trips made for claims, owner look-ups and releases (renewals apart)."""
        return self._claims.calls + self._owners.calls + self._releases.calls

    async def claim(self, chat_id: int, *, on_lost: Callable[[], None]) -> Lease:
        """Hold the chat from now on; `on_lost` runs if a renewal finds another node holding it.
        Raises HeldElsewhere (a live node has it) or OwnershipUnavailable (Redis)."""
        key = keys.lease("chat", chat_id)
        releasing = self._releasing.get(key)
        if releasing is not None:  # this node's release of it goes first, or it would delete
            await asyncio.shield(releasing)  # the new claim (same holder) once it runs
        try:
            ok, holder, sent_at = await self._claims(key)
        except _UNAVAILABLE as exc:
            raise OwnershipUnavailable(str(exc)) from exc
        if not ok:
            raise HeldElsewhere(holder)
        lease = Lease(key, sent_at + self._ttl, on_lost)
        self._leases[key] = lease
        return lease

    async def owner(self, chat_id: int) -> str | None:
        """The node holding the chat, or None when it is free (or its holder is known dead).
        Raises RedisError when Redis cannot be asked."""
        try:
            holder = await self._owners(keys.lease("chat", chat_id))
        except BatcherClosed as exc:
            raise OwnershipUnavailable(str(exc)) from exc
        if holder is None:
            return None
        if holder != self._me and self._view.is_dead(holder):
            return None
        return holder

    async def release(self, claim: Claim) -> None:
        """Give the lease up. A lease this node has since taken again for the same key (a new
        actor) is left alone: a claim of a key this node is releasing waits for the release
        (releases and claims go out in separate batches, in no fixed order)."""
        assert isinstance(claim, Lease), claim
        lease = claim
        lease.lost = True
        current = self._leases.get(lease.key)
        if current is not lease:
            return
        del self._leases[lease.key]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releasing[lease.key] = done
        try:
            await self._releases(lease.key)
        except _UNAVAILABLE as exc:
            log.warning("lease.release_failed", extra={"key": lease.key, "error": str(exc)})
        finally:
            if self._releasing.get(lease.key) is done:
                del self._releasing[lease.key]
            done.set_result(None)

    # --- one round trip per batch ---------------------------------------------------------------

    async def _serve_claims(self, lease_keys: Sequence[str]) -> list[_Claimed]:
        sent_at = time.monotonic()
        args: list[bytes | str | int] = [self._me, self._ttl_ms, *self._view.dead_args()]
        if self._backend.sharded:
            replies = await self._acquire.run([([key], args) for key in lease_keys])
            flat = [item for reply in replies for item in reply]
        else:
            flat = (await self._acquire.run([(list(lease_keys), args)]))[0]
        return [
            (bool(flat[2 * i]), _text(flat[2 * i + 1]), sent_at) for i in range(len(lease_keys))
        ]

    async def _serve_owners(self, lease_keys: Sequence[str]) -> list[str | None]:
        if self._backend.sharded:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in lease_keys:
                    pipe.get(key)
                values: list[Any] = await pipe.execute()
        else:
            values = await self._redis.mget(list(lease_keys))
        return [None if value is None else _text(value) for value in values]

    async def _serve_releases(self, lease_keys: Sequence[str]) -> list[None]:
        if self._backend.sharded:
            await self._release.run([([key], [self._me]) for key in lease_keys])
        else:
            await self._release.run([(list(lease_keys), [self._me])])
        return [None] * len(lease_keys)

    # --- renewal --------------------------------------------------------------------------------

    async def renew_all(self) -> None:
        """Extend every lease held; a lease another node took is reported to its `on_lost`.
        Raises RedisError when Redis did not answer: the leases keep their deadlines and the
        next round tries again.

        One Redis: one script call for all of them. A Redis Cluster: a script per hash slot
        would cost its fixed overhead (~15 µs of Redis CPU) for nearly every lease, so each
        lease is `GETEX`ed instead (one pipeline, every shard in parallel): read the holder and
        push the expiry in one step. Ours: kept. Missing (Redis forgot): taken back with
        `SET NX`. Another's: lost; its expiry was pushed once too, which at most delays a
        takeover of a dead holder's lease by one TTL (the fencing epoch keeps writes safe)."""
        leases = list(self._leases.values())
        if not leases:
            return
        sent_at = time.monotonic()
        if self._backend.sharded:
            flags = await self._renew_each(leases)
        else:
            flags = await self._renew(keys=[le.key for le in leases], args=[self._me, self._ttl_ms])
        for lease, kept in zip(leases, flags, strict=True):
            if kept:
                lease.valid_until = sent_at + self._ttl
            elif self._leases.get(lease.key) is lease:
                del self._leases[lease.key]
                lease.lost = True
                metrics.OWNERSHIP_CHANGES.labels(change="lost").inc()
                log.warning("lease.lost", extra={"key": lease.key})
                lease.on_lost()

    async def _renew_each(self, leases: list[Lease]) -> list[bool]:
        me = self._me.encode()
        async with self._redis.pipeline(transaction=False) as pipe:
            for lease in leases:
                pipe.getex(lease.key, px=self._ttl_ms)
            holders: list[bytes | None] = await pipe.execute()
        missing = [i for i, holder in enumerate(holders) if holder is None]
        retaken: list[bool | None] = []
        if missing:
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in missing:
                    pipe.set(leases[i].key, self._me, nx=True, px=self._ttl_ms)
                retaken = await pipe.execute()
        kept = [holder == me for holder in holders]
        for i, taken in zip(missing, retaken, strict=True):
            kept[i] = bool(taken)
        return kept

    async def run(self) -> None:
        """Renew every third of the TTL until cancelled."""
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self.renew_all()
            except _REDIS_DOWN as exc:
                metrics.REDIS_ERRORS.labels(op="lease_renew").inc()
                log.warning("lease.renew_failed", extra={"error": str(exc), "held": len(self)})

    async def release_all(self) -> None:
        """Shutdown: give up every lease held (one batched call), then stop the batchers."""
        await asyncio.gather(*(self.release(lease) for lease in list(self._leases.values())))
        for batcher in (self._claims, self._owners, self._releases):
            await batcher.aclose()
