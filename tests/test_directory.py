"""The ownership directory over a real Redis (a dedicated database flushed per test): leases,
liveness of their holders, renewal, and the local validity deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from node.actors.ports import HeldElsewhere
from node.cluster import keys
from node.cluster.directory import Directory, Lease
from node.cluster.identity import NodeIdentity

TTL = 3.0
CHAT = 42
KEY = keys.lease("chat", CHAT)


class Node:
    """One node's view: its identity, its directory, and the leases it was told it lost."""

    def __init__(self, redis: aioredis.Redis, name: str, ttl: float = TTL) -> None:
        self.identity = NodeIdentity.new(name)
        self.me = self.identity.incarnation
        self.lost: list[str] = []
        self.lost_event = asyncio.Event()
        self.redis = redis
        self.directory = Directory(redis, self.identity, ttl=ttl)

    async def claim(self, chat_id: int = CHAT) -> Lease:
        def on_lost() -> None:
            self.lost.append(keys.lease("chat", chat_id))
            self.lost_event.set()

        claim = await self.directory.claim(chat_id, on_lost=on_lost)
        assert isinstance(claim, Lease)
        return claim

    async def live(self) -> None:
        await self.redis.set(keys.alive(self.me), b"1")

    async def die(self) -> None:
        await self.redis.delete(keys.alive(self.me))


@pytest.fixture
async def nodes(redis: aioredis.Redis) -> AsyncIterator[Callable[..., Node]]:
    def make(name: str, ttl: float = TTL) -> Node:
        return Node(redis, name, ttl)

    yield make


async def test_claim_owner_release(redis: aioredis.Redis, nodes: Callable[..., Node]) -> None:
    a, b = nodes("a"), nodes("b")
    await a.live()
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
    redis: aioredis.Redis, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a"), nodes("b")
    lease = await a.claim()
    await redis.set(KEY, b.me)  # b took it over meanwhile
    await a.directory.release(lease)
    assert await redis.get(KEY) == b.me.encode()


async def test_a_lease_held_by_a_live_node_cannot_be_taken(
    redis: aioredis.Redis, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a"), nodes("b")
    await a.live()
    await a.claim()
    with pytest.raises(HeldElsewhere) as refused:
        await b.claim()
    assert refused.value.holder == a.me
    assert await redis.get(KEY) == a.me.encode()
    assert len(b.directory) == 0


async def test_a_lease_held_by_a_dead_node_can_be_taken(
    redis: aioredis.Redis, nodes: Callable[..., Node]
) -> None:
    a, b = nodes("a"), nodes("b")
    await a.live()
    await a.claim()
    await a.die()  # its membership key lapsed
    assert await b.directory.owner(CHAT) is None
    lease = await b.claim()
    assert lease.valid()
    assert await redis.get(KEY) == b.me.encode()


async def test_renew_all_takes_back_a_lease_redis_forgot(
    redis: aioredis.Redis, nodes: Callable[..., Node]
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
    redis: aioredis.Redis, nodes: Callable[..., Node]
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
    redis: aioredis.Redis, nodes: Callable[..., Node]
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


async def test_release_all(redis: aioredis.Redis, nodes: Callable[..., Node]) -> None:
    a = nodes("a")
    held = [await a.claim(i) for i in range(3)]
    await a.directory.release_all()
    assert len(a.directory) == 0 and not any(le.valid() for le in held)
    assert await redis.exists(*(le.key for le in held)) == 0


async def test_local_validity_ends_at_valid_until(nodes: Callable[..., Node]) -> None:
    ttl = 0.05
    a = nodes("a", ttl=ttl)
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
