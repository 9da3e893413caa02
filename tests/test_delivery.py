"""The delivery guarantee over real WebSockets, PostgreSQL and Redis.

Once a message is confirmed every device of every member gets it, in seq order per chat, until
that device acks it: live, as a backlog on connect (oldest first, at most `backlog_limit` with a
`gap` first), from the dormant user's Redis mailbox or, where that does not cover the range, from
PostgreSQL; never twice in one connection; never again once acked.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from node.cluster import keys
from node.storage import Storage
from tests.support import Account, Api, WsClient

NodeApi = Callable[..., Awaitable[tuple[TestServer, Api]]]


# --- helpers -------------------------------------------------------------------------------------


async def pair(api: Api) -> tuple[Account, Account, str]:
    a, b = await api.account(), await api.account()
    return a, b, await api.direct(a, b)


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


def frames_of_chat(ws: WsClient, chat_id: str) -> list[tuple[str, Any]]:
    """(type, seq or range) of every message and gap frame of one chat, in arrival order."""
    out: list[tuple[str, Any]] = []
    for f in ws.seen:
        if f["type"] == "message" and f["message"]["chat_id"] == chat_id:
            out.append(("message", f["message"]["seq"]))
        elif f["type"] == "gap" and f["chat_id"] == chat_id:
            out.append(("gap", (f["after_seq"], f["before_seq"])))
    return out


async def send_rest(api: Api, who: Account, chat_id: str, count: int, prefix: str = "m") -> None:
    for i in range(count):
        r = await api.send(who, chat_id, f"{prefix}{i}")
        assert r.status == 201, r


async def processed(ws: WsClient) -> None:
    """Every frame this client sent before is handled: the reader answers in order."""
    pongs = len(ws.of_kind("pong"))
    await ws.send({"type": "ping"})
    await ws.next("pong", where=lambda f: len(ws.of_kind("pong")) > pongs)


async def poll(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], deadline: float = 5.0
) -> tuple[Any, float]:
    """Poll a database (PostgreSQL or Redis) until `done(value)`: there is no event to wait on.
    Returns the value and the seconds it took."""
    start = time.monotonic()
    while True:
        value = await probe()
        if done(value):
            return value, time.monotonic() - start
        assert time.monotonic() - start < deadline, f"still {value!r} after {deadline}s"
        await asyncio.sleep(0.02)


def cursor_probe(
    storage: Storage, user: Account, device: str, chat_id: str
) -> Callable[[], Awaitable[Any]]:
    async def probe() -> Any:
        return await storage.pool.fetchval(
            "SELECT acked_seq FROM device_cursors WHERE user_id = $1 AND device_id = $2"
            " AND chat_id = $3",
            int(user.id),
            device,
            int(chat_id),
        )

    return probe


def mailbox_key(user: Account) -> str:
    return keys.mailbox(int(user.id))


async def reconnect(api: Api, ws: WsClient, who: Account, device: str) -> WsClient:
    await ws.close()
    return await api.ws(who, device)


# --- live delivery -------------------------------------------------------------------------------


async def test_live_messages_in_seq_order_to_every_device_of_both_users(api: Api) -> None:
    a, b, chat = await pair(api)
    a1, a2 = await api.ws(a, "d1"), await api.ws(a, "d2")
    b1, b2 = await api.ws(b, "d1"), await api.ws(b, "d2")
    cmids = [await a1.send_message(chat, f"text {i}") for i in range(60)]
    sent = [await a1.next("sent") for _ in cmids]
    by_cmid = {s["client_msg_id"]: s["message"]["seq"] for s in sent}
    assert [by_cmid[c] for c in cmids] == list(range(1, 61))  # accepted in the socket's order
    for ws in (a1, a2, b1, b2):
        got = await ws.messages(60, chat)
        assert seqs(got) == list(range(1, 61))
        assert [m["text"] for m in got] == [f"text {i}" for i in range(60)]
        assert [m["client_msg_id"] for m in got] == cmids
    for ws in (a1, a2, b1, b2):
        await ws.quiet("message", 0.2)
    assert a2.of_kind("sent") == [] and b1.of_kind("sent") == []


async def test_every_device_of_every_group_member_gets_a_rest_message(api: Api) -> None:
    a, b, c = await api.account(), await api.account(), await api.account()
    chat = await api.group(a, [b, c])
    sockets = [await api.ws(u, d) for u in (a, b, c) for d in ("phone", "laptop")]
    r = await api.send(c, chat, "to all")
    assert r.status == 201
    for ws in sockets:
        assert await ws.messages(1, chat) == [r.body]


async def test_a_group_burst_reaches_every_device_once_in_seq_order(api: Api) -> None:
    """Concurrent senders make batches of several messages, each encoded once and written as
    the same bytes to every member's every device: each device still sees each seq once, in
    order, and nothing else."""
    members = [await api.account() for _ in range(5)]
    chat = await api.group(members[0], members[1:])
    sockets = [await api.ws(u, d) for u in members for d in ("phone", "laptop")]
    senders, per_sender = sockets[::3], 20
    for n in range(per_sender):
        for i, ws in enumerate(senders):
            await ws.send_message(chat, f"{i}-{n}")
    total = len(senders) * per_sender
    for ws in sockets:
        got = await ws.messages(total, chat, timeout=30)
        assert seqs(got) == list(range(1, total + 1))
    for ws in sockets:
        await ws.quiet("message", 0.2)


def _writer_and_user_tasks() -> list[str]:
    names = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    return [n for n in names if n.startswith(("ws-writer:", "users:"))]


async def test_idle_connections_hold_no_writer_or_user_task(api: Api) -> None:
    """A connected device with nothing to send holds no task of its own (the writer runs only
    while something is queued) and neither does its user's actor; live messages still come."""
    a, b, chat = await pair(api)
    sockets = [await api.ws(a, "d1"), await api.ws(a, "d2"), await api.ws(b, "d1")]
    for ws in sockets:
        await processed(ws)
    users = {f"users:{a.id}", f"users:{b.id}"}

    async def settled() -> list[str]:
        return [n for n in _writer_and_user_tasks() if n.startswith("ws-writer:") or n in users]

    await poll(settled, lambda names: names == [])  # presence work of the connects finishes
    await sockets[0].send_message(chat, "hello")
    for ws in sockets:
        assert seqs(await ws.messages(1, chat)) == [1]
        await processed(ws)
    await poll(settled, lambda names: names == [])


async def test_two_senders_in_one_chat_interleave_in_seq_order(api: Api) -> None:
    a, b, chat = await pair(api)
    wa, wb, watch = await api.ws(a), await api.ws(b), await api.ws(b, "watch")
    for i in range(40):
        await wa.send_message(chat, f"a{i}")
        await wb.send_message(chat, f"b{i}")
    for ws in (wa, wb, watch):
        got = await ws.messages(80, chat)
        assert seqs(got) == list(range(1, 81))
        assert [m["text"] for m in got if m["sender_id"] == a.id] == [f"a{i}" for i in range(40)]
        assert [m["text"] for m in got if m["sender_id"] == b.id] == [f"b{i}" for i in range(40)]


# --- backlog on connect ----------------------------------------------------------------------


async def test_backlog_comes_first_oldest_first_then_live(api: Api) -> None:
    a, b, chat = await pair(api)
    wa = await api.ws(a)
    await send_rest(api, a, chat, 5)
    wb = await api.ws(b)
    backlog = await wb.messages(5, chat)
    assert seqs(backlog) == [1, 2, 3, 4, 5]
    assert [f["type"] for f in wb.seen[:6]] == ["ready"] + ["message"] * 5
    await wa.send_message(chat, "live")
    live = await wb.messages(1, chat)
    assert live[0]["seq"] == 6 and live[0]["text"] == "live"
    assert frames_of_chat(wb, chat) == [("message", s) for s in range(1, 7)]


async def test_a_backlog_larger_than_one_write_comes_whole_and_in_order(api: Api) -> None:
    """The backlog goes out in bundled writes of ~64 KB: 30 messages of 3,500 characters
    (~105 KB) take several, and arrive complete, in seq order, before what is live."""
    a, b, chat = await pair(api)
    wa = await api.ws(a)
    for i in range(30):
        r = await api.send(a, chat, f"{i:04d}" + "x" * 3496)
        assert r.status == 201, r
    wb = await api.ws(b)
    backlog = await wb.messages(30, chat)
    assert seqs(backlog) == list(range(1, 31))
    assert [m["text"][:4] for m in backlog] == [f"{i:04d}" for i in range(30)]
    await wa.send_message(chat, "live")
    assert seqs(await wb.messages(1, chat)) == [31]
    assert frames_of_chat(wb, chat) == [("message", s) for s in range(1, 32)]


async def test_backlog_of_several_chats_is_complete_and_ordered_per_chat(api: Api) -> None:
    a, b, c = await api.account(), await api.account(), await api.account()
    ab, bc = await api.direct(a, b), await api.direct(b, c)
    group = await api.group(c, [a, b])
    for i in range(6):
        await api.send(a, ab, f"ab{i}")
        await api.send(c, bc, f"bc{i}")
        await api.send(a if i % 2 else c, group, f"g{i}")
    wb = await api.ws(b)
    await wb.messages(18)
    for chat in (ab, bc, group):
        assert frames_of_chat(wb, chat) == [("message", s) for s in range(1, 7)]
    await wb.quiet("message", 0.2)


async def test_ack_is_durable_and_acked_messages_never_come_again(
    api: Api, storage: Storage
) -> None:
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 5)
    wb = await api.ws(b, "d1")
    assert seqs(await wb.messages(5, chat)) == [1, 2, 3, 4, 5]
    await wb.ack(chat, 3)
    _value, took = await poll(cursor_probe(storage, b, "d1", chat), lambda v: v == 3)
    assert took < 1.0, f"ack became durable after {took:.2f}s"  # contract: within 250 ms
    wb = await reconnect(api, wb, b, "d1")
    assert seqs(await wb.messages(2, chat)) == [4, 5]  # the unacked ones come again
    await wb.ack(chat, 5)
    await poll(cursor_probe(storage, b, "d1", chat), lambda v: v == 5)
    wb = await reconnect(api, wb, b, "d1")
    await wb.quiet("message", 0.4)
    await api.send(a, chat, "six")
    assert seqs(await wb.messages(1, chat)) == [6]
    assert frames_of_chat(wb, chat) == [("message", 6)]


async def test_acked_message_is_not_resent_on_an_immediate_reconnect(
    node_api: NodeApi,
) -> None:
    """ "A device that acked seq never receives that message again"; only an ack that was not
    durable when its node *died* may let a message come again. Here the node lives on: an ack
    still waiting for its batch flush (at most 250 ms) must count on a reconnect."""
    _server, api = await node_api(ack_flush_interval=0.25)
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 3)
    wb = await api.ws(b, "d1")
    assert seqs(await wb.messages(3, chat)) == [1, 2, 3]
    await wb.ack(chat, 2)
    await processed(wb)  # the node has taken the ack
    wb = await reconnect(api, wb, b, "d1")
    got = await wb.messages(1, chat)
    assert seqs(got) == [3], f"acked messages came again: {frames_of_chat(wb, chat)}"
    await wb.quiet("message", 0.4)
    assert frames_of_chat(wb, chat) == [("message", 3)]


async def test_acks_are_per_device(api: Api, storage: Storage) -> None:
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 3)
    b1, b2 = await api.ws(b, "d1"), await api.ws(b, "d2")
    for ws in (b1, b2):
        assert seqs(await ws.messages(3, chat)) == [1, 2, 3]
    await b1.ack(chat, 3)
    await poll(cursor_probe(storage, b, "d1", chat), lambda v: v == 3)
    b1 = await reconnect(api, b1, b, "d1")
    b2 = await reconnect(api, b2, b, "d2")
    assert seqs(await b2.messages(3, chat)) == [1, 2, 3]
    await b1.quiet("message", 0.3)


async def test_a_new_device_starts_where_the_user_joined(api: Api, storage: Storage) -> None:
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 3)
    b1 = await api.ws(b, "d1")
    assert seqs(await b1.messages(3, chat)) == [1, 2, 3]
    await b1.ack(chat, 3)
    await poll(cursor_probe(storage, b, "d1", chat), lambda v: v == 3)
    fresh = await api.ws(b, "never-seen-before")
    assert seqs(await fresh.messages(3, chat)) == [1, 2, 3]


async def test_member_added_while_connected_gets_only_later_messages(api: Api) -> None:
    owner, b, c = await api.account(), await api.account(), await api.account()
    chat = await api.group(owner, [b])
    await send_rest(api, owner, chat, 3, "before")
    wc = await api.ws(c)
    r = await api.call("POST", f"/api/v1/chats/{chat}/members", owner.token, json={"user_id": c.id})
    assert r.status == 200, r
    await send_rest(api, b, chat, 2, "after")
    got = await wc.messages(2, chat)
    assert seqs(got) == [4, 5] and [m["text"] for m in got] == ["after0", "after1"]
    await wc.quiet("message", 0.3)
    assert frames_of_chat(wc, chat) == [("message", 4), ("message", 5)]
    history = await api.history(c, chat)
    assert seqs(history) == [1, 2, 3, 4, 5]  # older history stays readable over REST
    other = await api.ws(c, "second-device")
    assert seqs(await other.messages(2, chat)) == [4, 5]
    await other.quiet("message", 0.3)


async def test_member_added_while_away_gets_only_later_messages_as_backlog(api: Api) -> None:
    owner, b, c = await api.account(), await api.account(), await api.account()
    chat = await api.group(owner, [b])
    await send_rest(api, owner, chat, 3, "before")
    r = await api.call("POST", f"/api/v1/chats/{chat}/members", owner.token, json={"user_id": c.id})
    assert r.status == 200, r
    await send_rest(api, owner, chat, 2, "after")
    wc = await api.ws(c)
    assert seqs(await wc.messages(2, chat)) == [4, 5]
    await wc.quiet("message", 0.3)
    assert frames_of_chat(wc, chat) == [("message", 4), ("message", 5)]
    assert seqs(await api.history(c, chat, after_seq=0)) == [1, 2, 3, 4, 5]


async def test_removed_member_gets_nothing_more(api: Api) -> None:
    owner, b = await api.account(), await api.account()
    chat = await api.group(owner, [b])
    wb = await api.ws(b)
    await api.send(owner, chat, "one")
    assert seqs(await wb.messages(1, chat)) == [1]
    r = await api.call("DELETE", f"/api/v1/chats/{chat}/members/{b.id}", owner.token)
    assert r.status == 204
    await api.send(owner, chat, "two")
    await wb.quiet("message", 0.4)
    cmid = await wb.send_message(chat, "still here?")
    err = await wb.next("error")
    assert (err["code"], err["ref"]) == ("not_member", cmid)


# --- backlog limit -------------------------------------------------------------------------------


async def test_backlog_limit_sends_a_gap_then_the_newest(
    node_api: NodeApi,
) -> None:
    _server, api = await node_api(backlog_limit=5)
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 12)
    wb = await api.ws(b)
    got = await wb.messages(5, chat)
    assert seqs(got) == [8, 9, 10, 11, 12]
    gap = wb.of_kind("gap")
    assert gap == [{"type": "gap", "chat_id": chat, "after_seq": 0, "before_seq": 8}]
    assert frames_of_chat(wb, chat) == [("gap", (0, 8))] + [("message", s) for s in range(8, 13)]
    skipped = await api.history(b, chat, after_seq=0, before_seq=8)
    assert seqs(skipped) == list(range(1, 8))  # the range the gap names, over REST
    await api.send(a, chat, "live")
    assert seqs(await wb.messages(1, chat)) == [13]
    assert len(wb.of_kind("gap")) == 1


async def test_backlog_limit_gap_starts_at_the_devices_cursor(
    node_api: NodeApi,
    storage: Storage,
) -> None:
    _server, api = await node_api(backlog_limit=5)
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 2)
    wb = await api.ws(b, "d1")
    assert seqs(await wb.messages(2, chat)) == [1, 2]
    await wb.ack(chat, 2)
    await poll(cursor_probe(storage, b, "d1", chat), lambda v: v == 2)
    await wb.close()
    await send_rest(api, a, chat, 12)
    wb = await api.ws(b, "d1")
    assert seqs(await wb.messages(5, chat)) == [10, 11, 12, 13, 14]
    assert frames_of_chat(wb, chat) == [("gap", (2, 10))] + [("message", s) for s in range(10, 15)]


async def test_backlog_at_the_limit_has_no_gap(
    node_api: NodeApi,
) -> None:
    _server, api = await node_api(backlog_limit=5)
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 5)
    wb = await api.ws(b)
    assert seqs(await wb.messages(5, chat)) == [1, 2, 3, 4, 5]
    await wb.quiet("gap", 0.3)


# --- the dormant user's Redis mailbox ------------------------------------------------------------


async def test_messages_for_a_dormant_user_land_in_the_mailbox_and_are_delivered(
    api: Api, redis: aioredis.Redis
) -> None:
    a, b, chat = await pair(api)
    wa = await api.ws(a)  # the sender is connected: not dormant
    await send_rest(api, a, chat, 4)
    assert seqs(await wa.messages(4, chat)) == [1, 2, 3, 4]
    assert await redis.llen(mailbox_key(b)) == 4
    assert await redis.llen(mailbox_key(a)) == 0
    entries: list[bytes] = await redis.lrange(mailbox_key(b), 0, -1)  # type: ignore[assignment]
    assert [e.split(b":", 2)[:2] for e in entries] == [
        [chat.encode(), str(s).encode()] for s in range(1, 5)
    ]
    wb = await api.ws(b, "d1")
    got = await wb.messages(4, chat)
    assert got == await api.history(b, chat)
    await wb.ack(chat, 4)
    await poll(lambda: redis.llen(mailbox_key(b)), lambda n: n == 0)
    await wb.quiet("message", 0.2)


async def test_the_mailbox_is_kept_until_everything_read_from_it_is_acked(
    api: Api, redis: aioredis.Redis, storage: Storage
) -> None:
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 4)
    assert await redis.llen(mailbox_key(b)) == 4
    wb = await api.ws(b, "d1")
    assert seqs(await wb.messages(4, chat)) == [1, 2, 3, 4]
    await wb.ack(chat, 2)
    await poll(cursor_probe(storage, b, "d1", chat), lambda v: v == 2)
    await processed(wb)
    assert await redis.llen(mailbox_key(b)) == 4
    await wb.ack(chat, 4)
    await poll(lambda: redis.llen(mailbox_key(b)), lambda n: n == 0)


async def test_sender_without_devices_gets_its_own_messages_through_the_mailbox(
    api: Api, redis: aioredis.Redis
) -> None:
    a, _b, chat = await pair(api)
    await send_rest(api, a, chat, 3)
    assert await redis.llen(mailbox_key(a)) == 3
    wa = await api.ws(a)
    assert seqs(await wa.messages(3, chat)) == [1, 2, 3]


async def test_backlog_is_complete_when_redis_forgot_the_mailbox(
    api: Api, redis: aioredis.Redis
) -> None:
    a, b, chat = await pair(api)
    c = await api.account()
    other = await api.direct(c, b)
    await send_rest(api, a, chat, 6, "a")
    await send_rest(api, c, other, 3, "c")
    assert await redis.llen(mailbox_key(b)) == 9
    await redis.flushdb()
    wb = await api.ws(b)
    await wb.messages(9)
    assert frames_of_chat(wb, chat) == [("message", s) for s in range(1, 7)]
    assert frames_of_chat(wb, other) == [("message", s) for s in range(1, 4)]
    await api.send(a, chat, "after the flush")
    assert seqs(await wb.messages(1, chat)) == [7]


@pytest.mark.parametrize("tamper", ["middle", "oldest", "newest"])
async def test_backlog_is_complete_when_the_mailbox_misses_entries(
    api: Api, redis: aioredis.Redis, tamper: str
) -> None:
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 6)
    key = mailbox_key(b)
    entries: list[bytes] = await redis.lrange(key, 0, -1)  # type: ignore[assignment]
    assert len(entries) == 6
    victim = {"middle": entries[2], "oldest": entries[0], "newest": entries[5]}[tamper]
    assert await redis.lrem(key, 1, victim) == 1  # type: ignore[arg-type]
    assert await redis.llen(key) == 5
    wb = await api.ws(b)
    got = await wb.messages(6, chat)
    assert got == await api.history(b, chat)
    assert seqs(got) == [1, 2, 3, 4, 5, 6]
    await wb.quiet("message", 0.3)


async def test_mailbox_trimmed_by_one_device_loses_nothing_for_another(
    api: Api, redis: aioredis.Redis, storage: Storage
) -> None:
    """The mailbox is per user, cursors are per device: what one device read from it and acked
    (and so trimmed) still reaches the user's other devices, once each."""
    a, b, chat = await pair(api)
    await send_rest(api, a, chat, 3)
    assert await redis.llen(mailbox_key(b)) == 3
    b1 = await api.ws(b, "d1")
    assert seqs(await b1.messages(3, chat)) == [1, 2, 3]
    b2 = await api.ws(b, "d2")
    assert seqs(await b2.messages(3, chat)) == [1, 2, 3]
    await b2.close()
    await b1.ack(chat, 3)
    await poll(lambda: redis.llen(mailbox_key(b)), lambda n: n == 0)
    b2 = await api.ws(b, "d2")
    assert seqs(await b2.messages(3, chat)) == [1, 2, 3]
    await b2.quiet("message", 0.3)


# --- never twice in one connection ------------------------------------------------------------


async def test_backlog_and_live_overlap_deliver_each_seq_exactly_once(api: Api) -> None:
    a, b, chat = await pair(api)
    wa = await api.ws(a)
    rounds, per_round = 30, 15
    total = rounds * per_round
    joins: dict[int, asyncio.Task[WsClient]] = {}
    plan = {4: "d1", 11: "d2", 19: "d3"}
    for r in range(rounds):
        cmids = [await wa.send_message(chat, f"r{r}-{i}") for i in range(per_round)]
        if r in plan:  # connect while this round is being stored and delivered
            joins[r] = asyncio.create_task(api.ws(b, plan[r]))
        for _ in cmids:
            await wa.next("sent", timeout=20)
    receivers = [await task for task in joins.values()]
    for ws in receivers:
        got = await ws.messages(total, chat, timeout=30)
        assert seqs(got) == list(range(1, total + 1))
    for ws in receivers:
        await ws.quiet("message", 0.3)
        assert frames_of_chat(ws, chat) == [("message", s) for s in range(1, total + 1)]


async def test_reconnect_during_a_burst_sees_each_seq_once_per_connection(api: Api) -> None:
    a, b, chat = await pair(api)
    wa = await api.ws(a)
    wb = await api.ws(b, "d1")
    connections = [wb]
    total = 0
    for r in range(12):
        for i in range(20):
            await wa.send_message(chat, f"{r}-{i}")
        total += 20
        if r % 3 == 1:  # drop the connection mid-burst; the same device comes back
            wb = await reconnect(api, wb, b, "d1")
            connections.append(wb)
    for _ in range(total):
        await wa.next("sent", timeout=20)
    got = await wb.messages(total, chat, timeout=30)  # nothing acked: all of it again
    assert seqs(got) == list(range(1, total + 1))
    await wb.quiet("message", 0.3)
    for ws in connections:
        s = [seq for kind, seq in frames_of_chat(ws, chat) if kind == "message"]
        assert s == list(range(1, len(s) + 1)), "within one connection: in order, no repeats"


# --- the same device twice -----------------------------------------------------------------------


async def test_the_same_device_connecting_again_closes_the_older_socket_with_4001(api: Api) -> None:
    a, b, chat = await pair(api)
    await api.send(a, chat, "before")
    old = await api.ws(b, "phone")
    assert seqs(await old.messages(1, chat)) == [1]
    new = await api.ws(b, "phone")
    await asyncio.wait_for(old.closed.wait(), 5)
    assert old.ws.close_code == 4001
    assert seqs(await new.messages(1, chat)) == [1]  # not acked: the backlog again
    await api.send(a, chat, "after")
    assert seqs(await new.messages(1, chat)) == [2]
    await processed(new)
    assert not new.closed.is_set()
    assert frames_of_chat(old, chat) == [("message", 1)]


async def test_a_different_device_does_not_close_the_first(api: Api) -> None:
    _a, b, _chat = await pair(api)
    first = await api.ws(b, "phone")
    await api.ws(b, "laptop")
    await processed(first)
    assert not first.closed.is_set()


# --- the bounded outbox --------------------------------------------------------------------------


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    # before connect: a small window, and small segments (loopback's 64 KiB MSS would let the
    # node's kernel send buffer grow to megabytes and hide the node's own bound)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)
    return sock


async def _read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=20)
        if msg.type == aiohttp.WSMsgType.TEXT:
            out.append(msg.json())
        elif msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return out


async def _slow_reader(
    api: Api, who: Account, device: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    """A WebSocket nobody reads (no reader task) over a socket with a 4 KiB receive buffer
    and 1 KiB segments."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    )
    ws = await session.ws_connect(
        f"{api.base}/api/v1/ws?device_id={device}",
        headers={"Authorization": f"Bearer {who.token}"},
        heartbeat=None,
    )
    # aiohttp would otherwise keep reading the socket into its own buffer (some 100s of KiB)
    # although nobody calls receive(); stop that too, as a client whose app hangs would.
    _protocol(ws).pause_reading()
    return session, ws


def _protocol(ws: aiohttp.ClientWebSocketResponse) -> Any:
    conn = ws._conn  # aiohttp has no public handle on a client socket's read side
    assert conn is not None and conn.protocol is not None
    return conn.protocol


async def test_a_socket_that_is_not_read_is_closed_with_1013_and_resumes(
    node_api: NodeApi,
) -> None:
    # the slow client takes its close frame once it reads again, however loaded the machine
    _server, api = await node_api(outbox_limit=16, close_grace=60)
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    session, slow = await _slow_reader(api, b, "slow")
    try:
        fast = await api.ws(b, "fast")  # same user, same load, but reads its socket
        total = 300
        await send_rest(api, a, chat, total, "x" * 3000 + "-")
        assert seqs(await fast.messages(total, chat, timeout=30)) == list(range(1, total + 1))
        assert not fast.closed.is_set()
        _protocol(slow).resume_reading()
        frames = await _read_until_closed(slow)  # only now does the slow client read
        assert slow.close_code == 1013
        got = [f["message"]["seq"] for f in frames if f["type"] == "message"]
        assert frames[0]["type"] == "ready"
        assert got == list(range(1, len(got) + 1))
        assert len(got) < total, "the node buffered everything for a client that did not read"
        again = await api.ws(b, "slow")
        resumed = await again.messages(total, chat, timeout=30)  # nothing was acked
        assert seqs(resumed) == list(range(1, total + 1))
    finally:
        await slow.close()
        await session.close()


async def test_a_client_that_never_reads_is_disconnected(
    node_api: NodeApi,
) -> None:
    """Contract: "a client that does not read its socket is disconnected rather than buffered".
    Observed without reading the socket: the user's only device goes away, so its contact is
    told `presence` offline (grace 0.2 s; within 5 s of the device leaving)."""
    _server, api = await node_api(outbox_limit=16)
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    session, slow = await _slow_reader(api, b, "slow")
    try:
        wa = await api.ws(a)
        await wa.next("presence", where=lambda f: f["user_id"] == b.id and f["online"])
        await send_rest(api, a, chat, 300, "x" * 3000 + "-")
        offline = await wa.next(
            "presence", timeout=10, where=lambda f: f["user_id"] == b.id and not f["online"]
        )
        assert offline == {"type": "presence", "user_id": b.id, "online": False}
    finally:
        await slow.close()
        await session.close()


# --- shutdown and restart ----------------------------------------------------------------------


async def test_node_shutdown_closes_sockets_with_1001_and_a_new_node_resumes(
    node_api: NodeApi,
    storage: Storage,
) -> None:
    server, api = await node_api()
    a, b, chat = await pair(api)
    wa, wb = await api.ws(a), await api.ws(b, "d1")
    for i in range(3):
        await wa.send_message(chat, f"m{i}")
    assert seqs(await wb.messages(3, chat)) == [1, 2, 3]
    await wb.ack(chat, 2)
    await processed(wb)  # the node has taken the ack; it must be durable by the end of close
    await server.close()
    for ws in (wa, wb):
        await asyncio.wait_for(ws.closed.wait(), 10)
        assert ws.ws.close_code == 1001
    assert await cursor_probe(storage, b, "d1", chat)() == 2
    _server2, api2 = await node_api()
    wb = await api2.ws(b, "d1")
    assert seqs(await wb.messages(1, chat)) == [3]
    await wb.quiet("message", 0.3)
    r = await api2.send(a, chat, "after restart")
    assert r.status == 201 and r.body["seq"] == 4
    assert seqs(await wb.messages(1, chat)) == [4]


async def test_node_shutdown_with_many_sockets_is_prompt(
    node_api: NodeApi,
) -> None:
    """Closing a node with many idle sockets finishes promptly (every socket gets 1001)."""
    server, api = await node_api()
    users = [await api.account() for _ in range(4)]
    sockets = [await api.ws(u, f"d{i}") for u in users for i in range(3)]
    start = time.monotonic()
    await server.close()
    assert time.monotonic() - start < 8
    for ws in sockets:
        await asyncio.wait_for(ws.closed.wait(), 5)
        assert ws.ws.close_code == 1001
