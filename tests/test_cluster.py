"""Several real node processes on one PostgreSQL and one Redis (or a Redis Cluster) behave as one
messenger, and killing, pausing or cutting off any part of it loses no confirmed message."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from node.cluster import keys
from node.cluster.connection import RedisBackend
from node.embedded import EmbeddedPostgres, EmbeddedRedis
from node.storage import apply_migrations
from tests.cluster_support import (
    Cluster,
    chat_epoch,
    message_rows,
    pair,
    send_until_accepted,
    wait_cursor,
)
from tests.support import Api, free_port

pytestmark = pytest.mark.process


async def test_hundreds_of_messages_cross_nodes_in_order(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    any_redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    a, b = await cluster_factory(database_url, any_redis_url).start(2)
    api_a, api_b = Api(http, a.url), Api(http, b.url)
    alice, bob, chat = await pair(api_a)
    on_a = await api_a.ws(alice)
    on_b = await api_b.ws(bob)
    assert on_a.ready["node_id"] != on_b.ready["node_id"]

    sent_at: dict[int, float] = {}
    for i in range(300):
        await on_a.send_message(chat, f"a{i}", cmid=f"a{i}")
    for _ in range(300):
        frame = await on_a.next("sent")
        sent_at[frame["message"]["seq"]] = time.perf_counter()
    got = await on_b.messages(300, chat, timeout=60)
    assert [m["seq"] for m in got] == list(range(1, 301))
    assert [m["text"] for m in got] == [f"a{i}" for i in range(300)]

    # the other way: bob's sends go from node B to the chat's owner and back
    latencies = []
    for i in range(100):
        start = time.perf_counter()
        await on_b.send_message(chat, f"b{i}")
        sent = await on_b.next("sent")
        assert sent["message"]["seq"] == 301 + i
        await on_a.next("message", where=lambda f, seq=301 + i: f["message"]["seq"] == seq)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    print(
        f"cross-node send->deliver ms: p50={statistics.median(latencies):.1f} "
        f"p99={latencies[98]:.1f} max={latencies[-1]:.1f}"
    )
    await api_a.close()
    await api_b.close()


async def test_one_users_devices_on_two_nodes_get_everything(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    any_redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    a, b = await cluster_factory(database_url, any_redis_url).start(2)
    api_a, api_b = Api(http, a.url), Api(http, b.url)
    alice, bob, chat = await pair(api_a)
    sender = await api_a.ws(alice, "laptop")
    phone = await api_a.ws(bob, "phone")  # same node as the chat
    laptop = await api_b.ws(bob, "laptop")  # the other node
    presence = await phone.next("presence", where=lambda f: f["user_id"] == alice.id)
    assert presence["online"] is True

    for i in range(50):
        await sender.send_message(chat, f"m{i}")
    assert [m["seq"] for m in await phone.messages(50, chat)] == list(range(1, 51))
    assert [m["seq"] for m in await laptop.messages(50, chat)] == list(range(1, 51))
    # alice's own second device on node B gets her messages too
    alice_b = await api_b.ws(alice, "tablet")
    assert [m["seq"] for m in await alice_b.messages(50, chat)] == list(range(1, 51))

    await sender.send({"type": "typing", "chat_id": chat})
    assert (await laptop.next("typing"))["user_id"] == alice.id
    await phone.send({"type": "read", "chat_id": chat, "seq": 50})
    read = await laptop.next("read")  # echoed to bob's other device, across nodes
    assert (read["user_id"], read["seq"]) == (bob.id, 50)
    assert (await sender.next("read"))["seq"] == 50

    await alice_b.close()
    await sender.close()
    offline = await laptop.next(
        "presence", where=lambda f: f["user_id"] == alice.id and not f["online"]
    )
    assert offline["online"] is False
    await api_a.close()
    await api_b.close()


async def test_receivers_node_killed_mid_stream_loses_nothing(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    any_redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    cluster = cluster_factory(database_url, any_redis_url)
    a, b = await cluster.start(2)
    api_a, api_b = Api(http, a.url), Api(http, b.url)
    alice, bob, chat = await pair(api_a)
    sender = await api_a.ws(alice)
    receiver = await api_b.ws(bob, "phone")

    async def stream() -> list[int]:
        confirmed = []
        for i in range(200):
            await sender.send_message(chat, f"m{i}")
            confirmed.append((await sender.next("sent"))["message"]["seq"])
        return confirmed

    streaming = asyncio.create_task(stream())
    first = await receiver.messages(60, chat)
    acked = first[-1]["seq"]
    await receiver.ack(chat, acked)
    await wait_cursor(database_url, int(bob.id), "phone", int(chat), acked)
    await b.kill()  # mid-stream: alice keeps sending
    confirmed = await streaming

    again = await api_a.ws(bob, "phone")  # the device reconnects to the surviving node
    rest = await again.messages(200 - acked, chat, timeout=30)
    assert [m["seq"] for m in rest] == list(range(acked + 1, 201))  # nothing acked came again
    assert sorted(confirmed) == list(range(1, 201))
    await again.quiet("message", within=0.3)
    await api_a.close()


async def test_a_send_forwarded_on_a_stale_owner_memory_is_routed_again(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    any_redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    """A remembers that B owns the chat (it forwarded a send there). B's chat actor goes idle
    and gives the chat up; C takes it. A's memory is now stale while B lives: A's next send goes
    to B, which looks the owner up in the directory (not in its own memory) and hands it on to
    C. The send is accepted at once (no 503), in order, and C keeps the chat (no takeover)."""
    cluster = cluster_factory(database_url, any_redis_url)
    # a long lease (A's memory lasts as long), actors that go idle fast
    quick = {"MESSENGER_LEASE_TTL": "15", "MESSENGER_ACTOR_IDLE_TIMEOUT": "0.5"}
    a, b, c = (cluster.launch(**quick) for _ in range(3))
    await asyncio.gather(*(n.wait_healthy() for n in (a, b, c)))
    api_a, api_b, api_c = Api(http, a.url), Api(http, b.url), Api(http, c.url)
    alice, bob, chat = await pair(api_a)
    lease = keys.lease("chat", int(chat))
    redis = RedisBackend.connect(any_redis_url, timeout=5.0)
    try:
        assert (await api_b.send(bob, chat, "b owns it")).status == 201
        assert (await api_a.send(alice, chat, "a forwards to b")).status == 201  # A remembers B
        async with asyncio.timeout(10):  # B's actor stops idle and releases the lease
            while await redis.client.exists(lease):  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.05)
        assert (await api_c.send(bob, chat, "c owns it")).status == 201
        held_by_c = await redis.client.get(lease)
        epoch = await chat_epoch(database_url, chat)

        stale = await api_a.send(alice, chat, "a on a stale memory")
        assert stale.status == 201 and stale.body["seq"] == 4
        assert "route.forwarded_again" in b.log_path.read_text()  # it did go to B first
        assert await redis.client.get(lease) == held_by_c
        assert await chat_epoch(database_url, chat) == epoch  # nobody took the chat over
        rows = await message_rows(database_url, chat)
        assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    finally:
        await redis.aclose()
        for api in (api_a, api_b, api_c):
            await api.close()


async def test_owner_paused_past_its_lease_cannot_write_with_a_stale_token(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    a, b = await cluster_factory(database_url, redis_url).start(2)
    api_a, api_b = Api(http, a.url), Api(http, b.url)
    alice, bob, chat = await pair(api_a)
    on_a = await api_a.ws(alice)
    for i in range(5):
        assert (await api_a.send(alice, chat, f"before{i}")).status == 201  # A owns the chat
    first_epoch = await chat_epoch(database_url, chat)

    a.signal_group(signal.SIGSTOP)
    try:
        await on_a.send_message(chat, "sent-while-paused", cmid="paused")  # sits in A's socket
        # B takes over once A's membership and lease lapse (sends in between answer 503)
        taken = await send_until_accepted(api_b, bob, chat, "from-b", cmid="from-b")
        assert taken["seq"] == 6
        assert await chat_epoch(database_url, chat) > first_epoch
    finally:
        a.signal_group(signal.SIGCONT)

    sent = await on_a.next("sent", timeout=20)  # A must hand it to B, not write it itself
    assert sent["client_msg_id"] == "paused" and sent["message"]["seq"] == 7
    rows = await message_rows(database_url, chat)
    assert [r["seq"] for r in rows] == list(range(1, 8))
    stale = [r["seq"] for r in rows if r["epoch"] == first_epoch]
    assert stale == [1, 2, 3, 4, 5]  # nothing written with A's old token after the takeover
    assert (await api_a.send(alice, chat, "after")).body["seq"] == 8
    await api_a.close()
    await api_b.close()


async def test_redis_restarted_empty(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis", port=free_port(), persistent=False)
    redis_url = redis_server.start()
    try:
        a, b = await cluster_factory(database_url, redis_url).start(2)
        api_a, api_b = Api(http, a.url), Api(http, b.url)
        alice, bob, chat = await pair(api_a)
        carol = await api_a.account("carol")
        group = await api_a.group(alice, [bob, carol])
        on_a = await api_a.ws(alice)
        on_b = await api_b.ws(bob)
        await on_a.send_message(chat, "before")
        assert (await on_b.messages(1, chat))[0]["text"] == "before"
        for i in range(5):
            assert (await api_a.send(alice, group, f"g{i}")).status == 201  # carol is dormant

        redis_server.stop()
        redis_server.start()  # same port, nothing remembered

        # both nodes reconnect, resubscribe and re-register: live traffic crosses nodes again
        after = await send_until_accepted(api_a, alice, chat, "after", cmid="after")
        got = await on_b.next(
            "message", timeout=20, where=lambda f: f["message"]["id"] == after["id"]
        )
        assert got["message"]["seq"] == 2
        await on_b.send_message(chat, "reply")
        assert await on_a.next("message", where=lambda f: f["message"]["text"] == "reply")
        # the dormant user's mailbox was lost with Redis: the backlog comes from PostgreSQL
        carol_ws = await api_b.ws(carol)
        assert [m["text"] for m in await carol_ws.messages(5, group)] == [f"g{i}" for i in range(5)]
        await api_a.close()
        await api_b.close()
    finally:
        redis_server.stop()


async def test_postgres_restart_answers_503_then_recovers(
    cluster_factory: Callable[[str, str], Cluster],
    redis_url: str,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    database_url = postgres.start()
    try:
        await apply_migrations(database_url)
        (a,) = await cluster_factory(database_url, redis_url).start(1)
        api = Api(http, a.url)
        alice, bob, chat = await pair(api)
        on_a = await api.ws(alice)
        assert (await api.send(alice, chat, "one")).status == 201

        postgres.stop()
        started = time.monotonic()
        down = await api.send(alice, chat, "while-down", cmid="down")
        assert down.status == 503 and down.body["error"]["code"] == "unavailable"
        assert time.monotonic() - started < 15
        await on_a.send_message(chat, "ws-while-down", cmid="ws-down")
        error = await on_a.next("error", timeout=20)
        assert (error["code"], error.get("ref")) == ("unavailable", "ws-down")
        health = await api.call("GET", "/healthz")
        assert health.status == 503 and "postgres" in str(health.body)

        postgres.start()
        ok = await send_until_accepted(api, alice, chat, "while-down", cmid="down")
        assert ok["seq"] == 2  # the retried send is stored once
        bob_ws = await api.ws(bob)
        assert [m["text"] for m in await bob_ws.messages(2, chat)] == ["one", "while-down"]
        assert (await api.call("GET", "/healthz")).status == 200
        await api.close()
    finally:
        postgres.stop()
