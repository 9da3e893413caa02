"""A reconnect storm on real node processes: the devices of a killed node all come back at once
to the surviving one, each gets its unacked backlog exactly once and in seq order, the reads of
their connects are batched (a few statements for hundreds of devices), and the survivor never
takes the storm for a Redis that lost its memory."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import aiohttp
import asyncpg
import pytest

from node.services.access_tokens import AccessTokens
from node.storage import NewMessage, Storage, create_pool
from tests.cluster_support import SECRET, Cluster
from tests.support import NodeProcess, WsClient

pytestmark = pytest.mark.process

DEVICES = 200
BACKLOG = 10
ACKED = 3
READS = ("user_exists", "touch_device", "positions", "ranges")


@pytest.fixture
async def sockets() -> AsyncIterator[aiohttp.ClientSession]:
    # WebSockets hold their connection: no per-session connection limit
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def backlogs(database_url: str) -> list[tuple[int, int]]:
    """DEVICES users, each in a direct chat with one sender who posted BACKLOG messages there:
    (user_id, chat_id) per device."""
    pool = await create_pool(database_url, size=4)
    try:
        storage = Storage.over(pool)
        sender = (await storage.users.create("sender", "hash")).id
        out = []
        for i in range(DEVICES):
            uid = (await storage.users.create(f"dev{i}", "hash")).id
            chat, _ = await storage.chats.create_direct(sender, uid)
            epoch = await storage.chats.take_ownership(chat.id)
            assert epoch is not None
            batch = [NewMessage(sender, f"m{i}-{k}", f"text {k}") for k in range(BACKLOG)]
            await storage.messages.post_batch(chat.id, epoch, batch)
            out.append((uid, chat.id))
        await storage.aclose()
        return out
    finally:
        await pool.close()


async def batched(http: aiohttp.ClientSession, node: NodeProcess) -> dict[tuple[str, str], float]:
    """The node's batched-read counters: {(metric, read): value}."""
    async with http.get(node.url + "/metrics") as r:
        text = await r.text()
    found = re.findall(
        r'^messenger_(batched_reads|batched_read_queries)_total\{read="(\w+)"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return {(metric, read): float(value) for metric, read, value in found}


async def connect(http: aiohttp.ClientSession, node: NodeProcess, token: str) -> WsClient:
    return await WsClient.connect(http, node.url, token, "phone")


async def test_a_reconnect_storm_gets_every_backlog_once_with_batched_reads(
    cluster_factory: Callable[[str, str], Cluster],
    database_url: str,
    redis_url: str,
    sockets: aiohttp.ClientSession,
) -> None:
    devices = await backlogs(database_url)
    tokens = AccessTokens(SECRET, 3600)
    cluster = cluster_factory(database_url, redis_url)
    a, b = cluster.launch(), cluster.launch()
    await asyncio.gather(a.wait_healthy(), b.wait_healthy())

    # every device connects to A, gets its backlog and acks the first ACKED messages
    first = await asyncio.gather(*(connect(sockets, a, tokens.issue(u)) for u, _ in devices))
    for (_, chat), ws in zip(devices, first, strict=True):
        got = await ws.messages(BACKLOG, str(chat))
        assert [m["seq"] for m in got] == list(range(1, BACKLOG + 1))
        await ws.ack(str(chat), ACKED)
    conn = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(15):
            while (  # noqa: ASYNC110 - polling another process's writes: no event to await
                await conn.fetchval(
                    "SELECT count(*) FROM device_cursors WHERE acked_seq = $1", ACKED
                )
                < DEVICES
            ):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()

    before = await batched(sockets, b)
    await a.kill()
    # ... and all come back to B at once
    again = await asyncio.gather(*(connect(sockets, b, tokens.issue(u)) for u, _ in devices))
    for (_, chat), ws in zip(devices, again, strict=True):
        got = await ws.messages(BACKLOG - ACKED, str(chat), timeout=30)
        assert [m["seq"] for m in got] == list(range(ACKED + 1, BACKLOG + 1))  # once, in order
    await asyncio.gather(*(ws.quiet("message", within=0.5) for ws in again))  # nothing twice

    after = await batched(sockets, b)
    for read in READS:
        served = after.get(("batched_reads", read), 0) - before.get(("batched_reads", read), 0)
        queries = after.get(("batched_read_queries", read), 0) - before.get(
            ("batched_read_queries", read), 0
        )
        assert served >= DEVICES, (read, served)  # every connect read went through a batch...
        assert queries <= DEVICES / 10, (read, queries)  # ... shared with many others
    log = b.log_text()
    assert "No connection available" not in log, b.log_tail()
    for event in ("membership.redis_forgot", "membership.lapsed", "membership.redis_down"):
        assert event not in log, b.log_tail()
    for ws in first + again:
        await ws.close()
