"""Redis faults in cluster mode, with real node processes over a real local Redis Cluster (three
masters with a replica each): a master killed mid-stream (its replica promoted), hash slots
migrated while traffic flows, and the whole Redis Cluster restarted empty. Every confirmed
message reaches every device, in order; nothing acked comes again; the nodes recover by
themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.cluster import keys
from node.cluster.connection import RedisBackend
from node.embedded import EmbeddedError
from node.embedded.redis_cluster import LocalRedisCluster
from tests.cluster_support import (
    Cluster,
    pair,
    redis_cluster_available,
    send_until_accepted,
    wait_cursor,
)
from tests.support import Account, Api, WsClient

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def fault_cluster(servers_dir: Path) -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of this module's own (1 s node timeout: failovers in about 2-3 s)."""
    redis_cluster_available()
    cluster = LocalRedisCluster(servers_dir / "redis-faults", node_timeout_ms=1000)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def faulty(fault_cluster: LocalRedisCluster) -> Iterator[LocalRedisCluster]:
    """The module's cluster, whole and empty; members a test killed are started again after
    it (they rejoin as replicas)."""
    fault_cluster.wait_ok()
    fault_cluster.flush()
    yield fault_cluster
    for member in fault_cluster.members:
        if member.pid is None:
            member.start()


async def incarnation(url: str, node_id: str) -> str:
    """A node's incarnation, from the membership registry."""
    backend = RedisBackend.connect(url, timeout=5.0)
    try:
        members = await backend.client.zrange(keys.MEMBERS, 0, -1)
    finally:
        await backend.aclose()
    return next(m.decode() for m in members if m.decode().startswith(node_id + "#"))


def serving(cluster: LocalRedisCluster, key: str) -> int | None:
    """The master serving the key's slot, None while none does (mid-failover)."""
    try:
        return cluster.master_of(key)
    except EmbeddedError:
        return None


async def stream(api: Api, who: Account, chat: str, texts: list[str]) -> list[float]:
    """Send each text until accepted, as a client retrying through a failover would; how long
    each send took to be confirmed (ms)."""
    took = []
    for text in texts:
        started = time.perf_counter()
        await send_until_accepted(api, who, chat, text, cmid=text)
        took.append((time.perf_counter() - started) * 1000)
    return took


async def seen(ws: WsClient, seq: int) -> None:
    """Wait until the socket got the message `seq` (its "message" frames stay unread)."""
    await ws.next(
        None, timeout=30, where=lambda f: f["type"] == "message" and f["message"]["seq"] >= seq
    )


async def receive_in_order(ws: WsClient, chat: str, first: int, last: int) -> None:
    got = await ws.messages(last - first + 1, chat, timeout=60)
    assert [m["seq"] for m in got] == list(range(first, last + 1))


async def start_pair(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    url: str,
    http: aiohttp.ClientSession,
) -> tuple[Api, Api, Account, Account, str, Any]:
    a, b = await cluster_factory(database_url, url).start(2)
    api_a, api_b = Api(http, a.url), Api(http, b.url)
    alice, bob, chat = await pair(api_a)
    return api_a, api_b, alice, bob, chat, b


async def test_master_killed_mid_stream_replica_promoted_loses_nothing(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    faulty: LocalRedisCluster,
    http: aiohttp.ClientSession,
) -> None:
    api_a, api_b, alice, bob, chat, _ = await start_pair(
        cluster_factory, database_url, faulty.url, http
    )
    receiver = await api_b.ws(bob, "phone")  # alice sends on node A, bob receives on node B
    await stream(api_a, alice, chat, [f"m{i}" for i in range(30)])
    await receive_in_order(receiver, chat, 1, 30)
    await receiver.ack(chat, 30)
    await wait_cursor(database_url, int(bob.id), "phone", int(chat), 30)

    # the master of bob's presence and mailbox dies while alice keeps sending
    victim = faulty.master_of(keys.presence(int(bob.id)))
    sending = asyncio.create_task(stream(api_a, alice, chat, [f"m{i}" for i in range(30, 150)]))
    await seen(receiver, 40)
    killed_at = time.monotonic()
    faulty.kill(victim)
    while serving(faulty, keys.presence(int(bob.id))) in (victim, None):  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # polling the Redis Cluster: there is no event to await
    promoted_after = time.monotonic() - killed_at
    took = await sending

    await receive_in_order(receiver, chat, 31, 150)  # everything, in order, nothing twice
    await receiver.ack(chat, 150)
    await wait_cursor(database_url, int(bob.id), "phone", int(chat), 150)
    again = await api_a.ws(bob, "phone")  # reconnecting elsewhere: nothing acked comes again
    await again.quiet("message", within=0.5)
    print(
        f"failover: replica promoted {promoted_after:.1f}s after the kill;"
        f" slowest send {max(took) / 1000:.1f}s"
    )
    await api_a.close()
    await api_b.close()


async def test_slots_migrated_while_traffic_flows_lose_nothing(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    faulty: LocalRedisCluster,
    http: aiohttp.ClientSession,
) -> None:
    api_a, api_b, alice, bob, chat, node_b = await start_pair(
        cluster_factory, database_url, faulty.url, http
    )
    receiver = await api_b.ws(bob, "phone")
    await stream(api_a, alice, chat, [f"m{i}" for i in range(10)])
    await receive_in_order(receiver, chat, 1, 10)
    inbox_b = keys.inbox(await incarnation(faulty.url, node_b.env["MESSENGER_NODE_ID"]))

    sending = asyncio.create_task(stream(api_a, alice, chat, [f"m{i}" for i in range(10, 150)]))
    # bob's presence and mailbox, the chat's lease and node B's inbox each move to another
    # master while messages flow through them
    moving = (keys.presence(int(bob.id)), keys.lease("chat", int(chat)), inbox_b)
    for key, when in zip(moving, (30, 70, 110), strict=True):
        await seen(receiver, when)
        source = faulty.master_of(key)
        faulty.migrate(key, next(p for p in faulty.masters() if p != source))
        assert faulty.master_of(key) != source
    await sending
    await receive_in_order(receiver, chat, 11, 150)
    await receiver.quiet("message", within=0.3)
    await api_a.close()
    await api_b.close()


async def test_redis_cluster_restarted_empty(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    faulty: LocalRedisCluster,
    http: aiohttp.ClientSession,
) -> None:
    api_a, api_b, alice, bob, chat, _ = await start_pair(
        cluster_factory, database_url, faulty.url, http
    )
    carol = await api_a.account("carol")
    group = await api_a.group(alice, [bob, carol])
    on_a = await api_a.ws(alice)
    on_b = await api_b.ws(bob)
    await on_a.send_message(chat, "before")
    assert (await on_b.messages(1, chat))[0]["text"] == "before"
    for i in range(5):
        assert (await api_a.send(alice, group, f"g{i}")).status == 201  # carol is dormant

    faulty.restart_empty()  # every shard, same ports, nothing remembered

    # both nodes rediscover the cluster, resubscribe and re-register: traffic crosses again
    after = await send_until_accepted(api_a, alice, chat, "after", cmid="after")
    got = await on_b.next("message", timeout=30, where=lambda f: f["message"]["id"] == after["id"])
    assert got["message"]["seq"] == 2
    await on_b.send_message(chat, "reply")
    assert await on_a.next("message", where=lambda f: f["message"]["text"] == "reply")
    # the dormant user's mailbox went with Redis: the backlog comes from PostgreSQL
    carol_ws = await api_b.ws(carol)
    assert [m["text"] for m in await carol_ws.messages(5, group)] == [f"g{i}" for i in range(5)]
    await api_a.close()
    await api_b.close()
