"""The Redis layer by itself, over one Redis and over a Redis Cluster (each test that touches Redis
runs with both): URLs, hash slots, the fan-out script, presence, membership and the inbox
transport. Real servers, real connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from node import errors
from node.actors.ports import ClusterUnreachable
from node.cluster import envelopes, keys
from node.cluster.connection import RedisBackend, parse_redis_url
from node.cluster.fanout import Fanout, FanoutGroup
from node.cluster.identity import NodeIdentity
from node.cluster.liveness import ClusterView
from node.cluster.membership import Membership
from node.cluster.presence import Presence
from node.cluster.registrations import PresenceRegistrations
from node.cluster.transport import InboxSubscriber, Publisher
from node.config import Settings
from node.services.auth_throttle import AuthThrottle

# --- URLs and slots (no server) --------------------------------------------------------------


def test_cluster_urls_name_their_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001,redis-3:7002")
    assert target.cluster and not target.tls
    assert target.nodes == (("10.0.0.1", 7000), ("::1", 7001), ("redis-3", 7002))
    assert (target.username, target.password) == ("u", "p@ss")
    assert parse_redis_url("rediss+cluster://h:6379").tls
    assert parse_redis_url("redis+cluster://h:6379/0").nodes == (("h", 6379),)
    single = parse_redis_url("rediss://h:6380/3")
    assert not single.cluster and single.tls and single.url == "rediss://h:6380/3"


@pytest.mark.parametrize(
    "url",
    [
        "http://h:1",
        "redis+cluster://",
        "redis+cluster://h",
        "redis+cluster://h:0",
        "redis+cluster://h:6379,",
        "redis+cluster://h:6379/2",
        "redis+cluster://h:6379?ssl_cert_reqs=none",
    ],
)
def test_bad_redis_urls_are_refused_by_the_settings(url: str) -> None:
    with pytest.raises(ValidationError, match="redis_url"):
        Settings(_env_file=None, redis_url=url)  # type: ignore[call-arg]


def test_keys_used_together_share_a_hash_slot() -> None:
    slot = key_slot(keys.presence(42).encode())
    assert key_slot(keys.mailbox(42).encode()) == slot
    assert len({key_slot(keys.presence(u).encode()) for u in range(100)}) > 50  # spread out
    assert keys.inbox("n#1") != keys.inbox("n#2")


# --- scripts and Pub/Sub over a real Redis and a real Redis Cluster ----------------------------


class Inbox:
    """A node's inbox subscriber that collects what arrives."""

    def __init__(self, url: str, name: str) -> None:
        self.identity = NodeIdentity.new(name)
        self.backend = RedisBackend.connect(url, timeout=5.0, pubsub=True)
        self.got: list[envelopes.Envelope] = []
        self.arrived = asyncio.Event()
        self.subscriber = InboxSubscriber(
            self.backend, self.identity, on_envelope=self.on_envelope, on_resubscribed=self.noop
        )
        self.task = asyncio.ensure_future(self.subscriber.run())

    async def on_envelope(self, envelope: envelopes.Envelope) -> None:
        self.got.append(envelope)
        self.arrived.set()

    async def noop(self) -> None:
        pass

    async def wait_for(self, count: int) -> list[envelopes.Envelope]:
        async with asyncio.timeout(10):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.got

    async def close(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.backend.aclose()


@pytest.fixture
async def inboxes(any_redis_url: str) -> AsyncIterator[Callable[[str], Any]]:
    made: list[Inbox] = []

    async def make(name: str) -> Inbox:
        inbox = Inbox(any_redis_url, name)
        made.append(inbox)
        async with asyncio.timeout(10):
            await inbox.subscriber.subscribed.wait()
        return inbox

    yield make
    for inbox in made:
        await inbox.close()


def frame(text: str) -> bytes:
    return envelopes.encode(envelopes.UserFrame(origin="test", user_ids=[], frame=text))


async def test_fan_out_publishes_once_per_node_and_boxes_dormant_members(
    any_redis: RedisBackend, inboxes: Callable[[str], Any]
) -> None:
    redis = any_redis.client
    node_b, node_c = await inboxes("b"), await inboxes("c")
    me, b, c = "a#1", node_b.identity.incarnation, node_c.identity.incarnation
    dead = "d#1"
    presence = {1: {me: 1}, 2: {b: 1}, 3: {b: 2, c: 1}, 5: {dead: 1}, 6: {c: 1}, 7: {me: 1, b: 1}}
    for user, held in presence.items():
        await redis.hset(keys.presence(user), mapping=held)  # type: ignore[misc]
    view = ClusterView()
    view.update([dead])
    fanout = Fanout(any_redis, me, view, mailbox_max=100, mailbox_ttl=60)

    result = await fanout.fanout_many(
        [
            FanoutGroup([1, 2, 3, 4, 5], frame("one"), [b"1:1:x", b"1:2:y"]),
            FanoutGroup([6, 4], frame("two"), [b"2:1:z"]),
            FanoutGroup([7], frame("three")),  # no entries: nothing to box
        ]
    )

    assert (result.dormant, result.published) == (3, 4)
    assert [e.frame for e in await node_b.wait_for(2)] == ["one", "three"]
    assert [e.frame for e in await node_c.wait_for(2)] == ["one", "two"]
    assert await redis.lrange(keys.mailbox(4), 0, -1) == [b"1:1:x", b"1:2:y", b"2:1:z"]
    assert await redis.lrange(keys.mailbox(5), 0, -1) == [b"1:1:x", b"1:2:y"]  # only a dead node
    assert await redis.hgetall(keys.presence(5)) == {}  # type: ignore[misc]  # dropped
    for user in (1, 2, 3, 6, 7):
        assert await redis.exists(keys.mailbox(user)) == 0
    await asyncio.sleep(0.2)  # nothing more comes (a publish would take a millisecond)
    assert len(node_b.got) == 2 and len(node_c.got) == 2


async def test_presence_counts_devices_over_nodes_not_known_dead(any_redis: RedisBackend) -> None:
    view = ClusterView()
    here = Presence(any_redis, "a#1", view)
    there = Presence(any_redis, "b#1", view)
    assert await here.set_devices(7, 2) == (0, 2)
    assert await there.set_devices(7, 1) == (2, 3)
    assert await here.online_among([7, 8]) == [7]
    view.update(["b#1"])  # b's heartbeat lapsed
    assert await here.set_devices(7, 1) == (2, 1)  # b's entry dropped
    assert await any_redis.client.hgetall(keys.presence(7)) == {b"a#1": b"1"}  # type: ignore[misc]
    assert await here.set_devices(7, 0) == (1, 0)
    assert await here.online_among([7]) == []


async def test_presence_of_many_users_in_one_call(any_redis: RedisBackend) -> None:
    view = ClusterView()
    here, there = Presence(any_redis, "a#1", view), Presence(any_redis, "b#1", view)
    await there.set_devices(2, 1)
    counts = [(1, 1), (2, 2), (3, 1), (1, 0), (4, 0)]  # user 1 twice: applied in order
    assert await here.set_many(counts) == [(0, 1), (1, 3), (0, 1), (1, 0), (0, 0)]
    assert sorted(await here.online_among([1, 2, 3, 4])) == [2, 3]
    view.update(["b#1"])
    assert await here.set_many([(2, 1), (3, 0)]) == [(2, 1), (1, 0)]  # b's entry dropped
    assert await any_redis.client.hgetall(keys.presence(2)) == {b"a#1": b"1"}  # type: ignore[misc]


class _CountingPresence(Presence):
    calls: list[int]

    async def set_many(self, counts: Any) -> list[tuple[int, int]]:
        self.calls.append(len(counts))
        return await super().set_many(counts)


async def test_registrations_of_a_storm_share_redis_calls(any_redis: RedisBackend) -> None:
    presence = _CountingPresence(any_redis, "a#1", ClusterView())
    presence.calls = []
    registrations = PresenceRegistrations(presence)
    runner = asyncio.create_task(registrations.run())
    try:
        answers = await asyncio.gather(*(registrations.set_devices(u, 1) for u in range(1, 1001)))
        assert answers == [(0, 1)] * 1000
        assert sum(presence.calls) == 1000 and len(presence.calls) <= 3  # not one per user
        assert await registrations.set_devices(5, 0) == (1, 0)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    with pytest.raises(ClusterUnreachable):  # nothing sends them any more: bounded
        await PresenceRegistrations(presence, timeout=0.1).set_devices(1, 1)


async def test_membership_registers_reports_the_dead_and_leaves(any_redis: RedisBackend) -> None:
    async def on_lost() -> None:
        raise AssertionError("beat() alone never recovers")

    views = {name: ClusterView() for name in ("a", "b")}
    ids = {name: NodeIdentity.new(name) for name in ("a", "b")}
    nodes = {
        name: Membership(any_redis, ids[name], views[name], interval=0.05, on_lost_memory=on_lost)
        for name in ("a", "b")
    }
    assert await nodes["a"].beat() == 0  # not registered before
    assert await nodes["a"].beat() == 1
    await nodes["b"].beat()
    assert views["b"].dead == frozenset()
    await asyncio.sleep(0.2)  # a misses three beats (TTL 0.15 s)
    await nodes["b"].beat()
    a = ids["a"].incarnation
    assert views["b"].dead == {a}
    assert await nodes["a"].beat() == 2  # lapsed: it must re-register what it holds
    await nodes["b"].beat()
    assert views["b"].dead == frozenset()
    await nodes["a"].leave()
    await nodes["b"].beat()
    assert views["b"].dead == {a}  # gone at once, without waiting for its TTL


async def test_an_envelope_reaches_only_the_node_it_is_for(
    any_redis: RedisBackend, inboxes: Callable[[str], Any]
) -> None:
    b, c = await inboxes("b"), await inboxes("c")
    publisher = Publisher(any_redis)
    assert await publisher.publish(b.identity.incarnation, envelopes.decode(frame("hi"))) == 1
    assert [e.frame for e in await b.wait_for(1)] == ["hi"]
    assert await publisher.publish("nobody#1", envelopes.decode(frame("lost"))) == 0
    await asyncio.sleep(0.2)
    assert c.got == []


async def test_login_throttling_counts_across_nodes_on_either_redis(
    any_redis: RedisBackend, any_redis_url: str
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=any_redis_url,
        auth_throttle=True,
        login_limit_account="2/minute",
        login_limit_address="100/minute",
    )
    one, two = AuthThrottle(any_redis.client, settings), AuthThrottle(any_redis.client, settings)
    await one.login("Bob", "10.0.0.1")
    await two.login("bob", "10.0.0.2")  # another node, another address: the same account
    with pytest.raises(errors.RateLimited) as refused:
        await one.login("BOB", "10.0.0.3")
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 60
