"""Faults inside the node reach someone: a send is always answered, one bad batch fails alone,
and a dead loop is restarted or named by /healthz — never a green node that stopped sending.

The "poison" is a CHECK constraint added to the test's own database: a row PostgreSQL refuses
although it passed every check at the edge (a constraint, a bug, data the edge did not foresee).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from node.app import RUNTIME, SUPERVISOR
from node.storage import Storage
from tests.support import Account, Api, assert_error

POISON = "poison: the database refuses this text"


@pytest.fixture
async def poisoned(storage: Storage) -> None:
    await storage.pool.execute(
        f"ALTER TABLE messages ADD CONSTRAINT refuse_poison CHECK (text <> '{POISON}')"
    )


async def test_a_poisoned_send_fails_alone_among_hundreds_of_good_ones(
    api: Api, poisoned: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pairs: list[tuple[Account, Account, str]] = []
    for _ in range(20):
        a, b = await api.account(), await api.account()
        pairs.append((a, b, await api.direct(a, b)))
    mallory, victim = await api.account(), await api.account()
    bad_chat = await api.direct(mallory, victim)
    senders = [await api.ws(a, "s") for a, _, _ in pairs]
    receivers = [await api.ws(b, "r") for _, b, _ in pairs]
    bad = await api.ws(mallory, "m")

    per_chat = 15  # 300 good sends in 20 chats, all in flight with the poisoned one
    sends = [
        ws.send_message(chat, f"good {i} {n}", f"c{i}-{n}")
        for n in range(per_chat)
        for i, (ws, (_, _, chat)) in enumerate(zip(senders, pairs, strict=True))
    ]
    sends.insert(len(sends) // 2, bad.send_message(bad_chat, POISON, "bad-1"))
    await asyncio.gather(*sends)

    refused = await bad.next("error", timeout=5)
    assert refused["ref"] == "bad-1"
    assert refused["code"] == "validation_error"
    for i, ws in enumerate(senders):
        confirmed = [await ws.next("sent", timeout=10) for _ in range(per_chat)]
        assert sorted(f["client_msg_id"] for f in confirmed) == sorted(
            f"c{i}-{n}" for n in range(per_chat)
        )
        assert ws.of_kind("error") == []
    for (_, _, chat), ws in zip(pairs, receivers, strict=True):
        got = await ws.messages(per_chat, chat, timeout=10)
        assert [m["seq"] for m in got] == list(range(1, per_chat + 1))
    assert await api.history(mallory, bad_chat) == []
    bad_events = {r.getMessage() for r in caplog.records} & {"actor.escalated", "actor.restarted"}
    assert bad_events == set()


async def test_a_poisoned_rest_send_is_answered_at_once(api: Api, poisoned: None) -> None:
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    started = time.monotonic()
    assert_error(await api.send(a, chat, POISON), 422, "validation_error")
    assert time.monotonic() - started < 2.0  # answered, not the 503 of a timed-out wait
    assert (await api.send(a, chat, "and this one is fine")).status == 201


async def test_a_crashed_commit_loop_is_restarted_and_sends_go_on(
    api: Api, node: TestServer
) -> None:
    runtime, supervisor = node.app[RUNTIME], node.app[SUPERVISOR]
    committer = runtime.committer
    original = committer._take
    crashed = asyncio.Event()

    def crash() -> Any:
        crashed.set()
        raise RuntimeError("a bug in the commit loop")

    committer._take = crash  # type: ignore[method-assign]
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    send = asyncio.ensure_future(api.send(a, chat, "through a crash"))
    await asyncio.wait_for(crashed.wait(), 5)
    committer._take = original  # type: ignore[method-assign]  # the bug is gone after a restart
    r = await send  # it stayed queued; the restarted loop stores it
    assert r.status == 201, r
    assert supervisor.restarts("commits") == 1
    health = await api.call("GET", "/healthz")
    assert health.status == 200, health


async def test_a_loop_that_cannot_recover_turns_healthz_red_and_sends_are_refused_in_time(
    node_api: Callable[..., Any],
) -> None:
    fatal: list[str] = []
    gave_up = asyncio.Event()

    def on_fatal(part: str) -> None:
        fatal.append(part)
        gave_up.set()

    server, api = await node_api(
        restart_budget=2, commit_timeout=0.5, app_options={"on_fatal": on_fatal}
    )
    committer = server.app[RUNTIME].committer

    def always_crash() -> Any:
        raise RuntimeError("the commit loop is broken")

    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    committer._take = always_crash  # type: ignore[method-assign]
    first = asyncio.ensure_future(api.send(a, chat, "wakes the broken loop"))
    await asyncio.wait_for(gave_up.wait(), 10)
    assert fatal == ["commits"]
    health = await api.call("GET", "/healthz")
    assert health.status == 503 and "commits" in health.body["failing"], health
    started = time.monotonic()
    assert_error(await api.send(a, chat, "nobody stores this"), 503, "unavailable")
    assert time.monotonic() - started < 3.0  # the commit bound, not a wait forever
    ws = await api.ws(a)
    await ws.send_message(chat, "nor this", "w1")
    err = await ws.next("error", timeout=5)
    assert (err["code"], err["ref"]) == ("unavailable", "w1")
    assert_error(await first, 503, "unavailable")
    assert await api.history(a, chat) == []
