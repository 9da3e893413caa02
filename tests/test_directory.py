"""The ownership directory over a real Redis and a real Redis Cluster (flushed per test): leases,
liveness of their holders (as the nodes' cluster view tells), renewal, the local validity
deadline, and fencing when a lease is lost with a failed-over master."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from node.actors.ports import HeldElsewhere
from node.cluster import keys
from node.cluster.connection import RedisBackend, RedisClient
from node.cluster.directory import Directory, Lease
from node.cluster.identity import NodeIdentity
from node.cluster.liveness import ClusterView
from node.storage import Storage
from node.storage.errors import Fenced
from node.storage.messages import NewMessage

TTL = 3.0
CHAT = 42
KEY = keys.lease("chat", CHAT)


class Node:
    """One node: its identity, its directory, and the leases it was told it lost. The nodes of
    a test share one cluster view (everyone learns of a death at once)."""

    def __init__(self, backend: RedisBackend, view: ClusterView, name: str, ttl: float) -> None:
        self.identity = NodeIdentity.new(name)
        self.me = self.identity.incarnation
        self.lost: list[str] = []
        self.lost_event = asyncio.Event()
        self.view = view
        self.directory = Directory(backend, self.identity, view, ttl=ttl)

    async def claim(self, chat_id: int = CHAT) -> Lease:
        def on_lost() -> None:
            self.lost.append(keys.lease("chat", chat_id))
            self.lost_event.set()

        claim = await self.directory.claim(chat_id, on_lost=on_lost)
        assert isinstance(claim, Lease)
        return claim

    def die(self) -> None:
        """Its heartbeat lapsed: the others' view says so."""
        self.view.update(self.view.dead | {self.me})


@pytest.fixture
def redis(any_redis: RedisBackend) -> RedisClient:
    return any_redis.client


@pytest.fixture
async def nodes(any_redis: RedisBackend) -> AsyncIterator[Callable[..., Node]]:
    view = ClusterView()

    def make(name: str, ttl: float = TTL) -> Node:
        return Node(any_redis, view, name, ttl)

    yield make


async def test_claim_owner_release(redis: RedisClient, nodes: Callable[..., Node]) -> None:
    a, b = nodes("a"), nodes("b")
    assert await b.directory.owner(CHAT) is None
    lease = await a.claim()
    assert lease.key == KEY and lease.valid() and len(a.directory) == 1
    assert await redis.get(KEY) == a.me.encode()
    assert 0 < await redis.pttl(KEY) <= TTL * 1000
    assert await a.directory.owner(CHAT) == a.me
    assert await b.directory.owner(CHAT) == a.me
    again = await a.claim()  # ours already: extended, not refused
    assert again.valid()
    await a.directory.release(again)
    assert not again.valid() and len(a.directory) == 0
    assert await redis.exists(KEY) == 0
    assert await b.directory.owner(CHAT) is None


async def test_release_never_drops_another_nodes_lease(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a"), nodes("b")
    lease = await a.claim()
    await redis.set(KEY, b.me)  # b took it over meanwhile
    await a.directory.release(lease)
    assert await redis.get(KEY) == b.me.encode()


async def test_a_lease_held_by_a_live_node_cannot_be_taken(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a"), nodes("b")
    await a.claim()
    with pytest.raises(HeldElsewhere) as refused:
        await b.claim()
    assert refused.value.holder == a.me
    assert await redis.get(KEY) == a.me.encode()
    assert len(b.directory) == 0


async def test_a_lease_held_by_a_dead_node_can_be_taken(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a"), nodes("b")
    await a.claim()
    a.die()  # its heartbeat lapsed
    assert await b.directory.owner(CHAT) is None
    lease = await b.claim()
    assert lease.valid()
    assert await redis.get(KEY) == b.me.encode()


async def test_renew_all_takes_back_a_lease_redis_forgot(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    a = nodes("a")
    lease = await a.claim()
    before = lease.valid_until
    await redis.delete(KEY)
    await a.directory.renew_all()
    assert await redis.get(KEY) == a.me.encode()
    assert 0 < await redis.pttl(KEY) <= TTL * 1000
    assert lease.valid() and not lease.lost and lease.valid_until >= before
    assert a.lost == []


async def test_renew_all_reports_a_lease_another_node_overwrote(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a"), nodes("b")
    kept = await a.claim(1)
    lease = await a.claim()
    await redis.set(KEY, b.me)
    await a.directory.renew_all()
    assert a.lost == [KEY]
    assert lease.lost and not lease.valid()
    assert kept.valid() and len(a.directory) == 1
    assert await redis.get(KEY) == b.me.encode()  # not taken back
    await a.directory.renew_all()
    assert a.lost == [KEY]  # reported once


async def test_run_renews_and_reports_losses(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a", ttl=0.6), nodes("b")
    lease = await a.claim()
    await redis.set(KEY, b.me)
    runner = asyncio.ensure_future(a.directory.run())
    try:
        async with asyncio.timeout(3):
            await a.lost_event.wait()  # at the first renewal, a third of the TTL in
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert a.lost == [KEY] and lease.lost


async def test_release_all(redis: RedisClient, nodes: Callable[..., Node]) -> None:
    a = nodes("a")
    held = [await a.claim(i) for i in range(3)]
    await a.directory.release_all()
    assert len(a.directory) == 0 and not any(le.valid() for le in held)
    assert await redis.exists(*(le.key for le in held)) == 0


async def test_local_validity_ends_at_valid_until(nodes: Callable[..., Node]) -> None:
    ttl = 0.05
    a = nodes("a", ttl=ttl)
    await a.directory.release(await a.claim(CHAT + 1))  # warm: connections made, script loaded
    before = time.monotonic()
    lease = await a.claim()
    after = time.monotonic()
    # counted from when the request was sent, never from when Redis answered
    assert before + ttl <= lease.valid_until <= after + ttl
    assert lease.valid()
    await asyncio.sleep(max(0.0, lease.valid_until - time.monotonic()) + 0.005)  # the deadline
    assert not lease.valid()  # no Redis round trip needed to know


def test_a_lease_value_object() -> None:
    lease = Lease("k", time.monotonic() + 60, lambda: None)
    assert lease.valid()
    lease.lost = True
    assert not lease.valid()
    assert not Lease("k", time.monotonic() - 0.001, lambda: None).valid()


async def test_a_lease_lost_in_a_failover_is_fenced_by_postgres(
    redis: RedisClient, nodes: Callable[..., Node], storage: Storage
) -> None:
    """A master acknowledged A's lease, then failed over before its replica had it: Redis no
    longer knows the lease. B takes the chat and bumps its epoch; A, which cannot tell yet, is
    refused by PostgreSQL at its next write, and learns of the loss at its next renewal."""
    owner = await storage.users.create("fence-owner", "hash")
    chat = (await storage.chats.create_group(owner.id, "g", [])).id
    a, b = nodes("a"), nodes("b")
    held_by_a = await a.claim(chat)
    epoch_a = await storage.chats.take_ownership(chat)
    assert epoch_a is not None
    await storage.messages.post_batch(chat, epoch_a, [NewMessage(owner.id, "a1", "by a")])

    await redis.delete(keys.lease("chat", chat))  # the write the promoted replica never got
    await b.claim(chat)
    epoch_b = await storage.chats.take_ownership(chat)
    assert epoch_b is not None and epoch_b > epoch_a

    assert held_by_a.valid()  # A cannot know before its next renewal...
    with pytest.raises(Fenced):  # ...but PostgreSQL refuses its stale epoch
        await storage.messages.post_batch(chat, epoch_a, [NewMessage(owner.id, "a2", "stale")])
    stored = await storage.messages.post_batch(chat, epoch_b, [NewMessage(owner.id, "b1", "by b")])
    assert [r.message.seq for r in stored if r.message] == [2]
    await a.directory.renew_all()
    assert a.lost == [keys.lease("chat", chat)] and not held_by_a.valid()
    assert await redis.get(keys.lease("chat", chat)) == b.me.encode()


async def test_many_chats_claimed_at_once_take_one_redis_call(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    """500 chats activated together: their claims, then their owner look-ups, then their
    releases each share one Redis round trip (one script call, or one pipeline on a Redis
    Cluster), and each chat gets its own answer: held by a live node -> HeldElsewhere, held by
    a dead one -> taken, free -> taken."""
    a, b, gone = nodes("a"), nodes("b"), nodes("gone")
    await b.claim(7)
    await gone.claim(8)
    gone.die()
    chats = range(1, 501)
    before = a.directory.calls
    results = await asyncio.gather(*(a.claim(i) for i in chats), return_exceptions=True)
    assert a.directory.calls - before == 1  # 500 without batching
    refused = results[7 - 1]
    assert isinstance(refused, HeldElsewhere) and refused.holder == b.me
    held = [r for r in results if isinstance(r, Lease)]
    assert len(held) == 499 and all(lease.valid() for lease in held)
    assert await redis.get(keys.lease("chat", 8)) == a.me.encode()  # the dead node's, taken

    before = a.directory.calls
    owners = await asyncio.gather(*(a.directory.owner(i) for i in chats))
    assert a.directory.calls - before == 1
    assert owners == [b.me if i == 7 else a.me for i in chats]

    before = a.directory.calls
    await asyncio.gather(*(a.directory.release(lease) for lease in held))
    assert a.directory.calls - before == 1
    assert len(a.directory) == 0
    assert await redis.exists(*(lease.key for lease in held)) == 0
    assert await redis.get(keys.lease("chat", 7)) == b.me.encode()  # b's is left alone


async def test_a_chat_claimed_again_while_its_release_is_in_flight_stays_held(
    redis: RedisClient, nodes: Callable[..., Node]
) -> None:
    """An actor stops (its release queued) and a new actor of the same chat claims it at once:
    the release must not delete the new claim (same holder) whatever order the batches take."""
    a = nodes("a")
    old = await a.claim()
    _, new = await asyncio.gather(a.directory.release(old), a.claim())
    assert new.valid() and not old.valid() and len(a.directory) == 1
    assert await redis.get(KEY) == a.me.encode()
