"""Web Push parts on their own: the fan-out's push decisions and the coalescing window in a real
Redis and a real Redis Cluster (each such test runs with both), and the pure rules (allowed hosts,
payload size, window bookkeeping, settings)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys

import pytest

from node.cluster import keys
from node.cluster.connection import RedisBackend, RedisClient
from node.cluster.fanout import Fanout, FanoutGroup, PushHint
from node.cluster.liveness import ClusterView
from node.config import PUBLIC_PUSH_SERVICES
from node.push.coalescing import LateMessages, Windows
from node.push.payload import MAX_PAYLOAD, push_payload
from node.push.subscriptions import PushFlags
from node.push.targets import InvalidSubscription, check_subscription, host_allowed
from node.storage import Storage
from node.storage.push import PushedMessage, PushStore
from tests.push_service import Browser, poll
from tests.support import REPO

ME = "node-a:1"
WINDOW = 5.0


def group(users: list[int], hint: PushHint | None) -> FanoutGroup:
    return FanoutGroup(users, b"{}", [b"entry"], hint)


@pytest.fixture
def redis(any_redis: RedisBackend) -> RedisClient:
    return any_redis.client


@pytest.fixture
async def fanout(any_redis: RedisBackend) -> Fanout:
    return Fanout(any_redis, ME, ClusterView(), mailbox_max=100, mailbox_ttl=60, push_window=WINDOW)


async def flag(redis: RedisClient, *users: int) -> None:
    for user in users:
        await redis.set(keys.push_subscribed(user), 1)


async def test_the_script_owes_pushes_only_to_dormant_subscribed_users(
    fanout: Fanout, redis: RedisClient
) -> None:
    await flag(redis, 1, 2, 3)
    await redis.hset(keys.presence(3), ME, 1)  # user 3 has a device here: not dormant
    # user 4 is dormant without a subscription; user 1 sent the message
    result = await fanout.fanout_many([group([1, 2, 3, 4], PushHint(10, 1, 0))])
    assert result.dormant == 3
    assert result.pushes == [(2, 10)]
    assert await redis.get(keys.push_gate(2)) == ME.encode()
    assert 1000 * WINDOW - 100 < await redis.pttl(keys.push_gate(2)) <= 1000 * WINDOW
    assert not await redis.exists(keys.push_gate(1), keys.push_gate(3), keys.push_gate(4))


async def test_groups_without_a_hint_owe_nothing(fanout: Fanout, redis: RedisClient) -> None:
    await flag(redis, 1)
    assert (await fanout.fanout_many([group([1], None)])).pushes == []
    ephemeral = FanoutGroup([1], b"{}", (), PushHint(10, 2, 0))  # no mailbox entries: no message
    assert (await fanout.fanout_many([ephemeral])).pushes == []


async def test_within_a_window_the_newest_message_waits_for_its_end(
    fanout: Fanout, redis: RedisClient
) -> None:
    await flag(redis, 1, 2, 3)
    first = await fanout.fanout_many([group([1, 2, 3], PushHint(10, 1, 0))])
    assert first.pushes == [(2, 10), (3, 10)]
    # 1 (skipped as the sender of 10) opens its window now; 2 and 3 are in theirs, so the
    # newest message each is owed waits in pushlate (never one of their own)
    second = await fanout.fanout_many(
        [group([1, 2, 3], PushHint(12, 2, 11)), group([1, 2, 3], PushHint(13, 3, 0))]
    )
    assert second.pushes == [(1, 12)]  # the second group finds 1's window taken
    assert await redis.get(keys.push_late(1)) == b"13"
    assert await redis.get(keys.push_late(2)) == b"13"
    assert await redis.get(keys.push_late(3)) == b"12"  # 13 is 3's own message


async def test_the_window_holder_takes_the_late_message_at_its_end(
    fanout: Fanout, redis: RedisClient
) -> None:
    await flag(redis, 2)
    await fanout.fanout_many([group([2], PushHint(10, 1, 0))])
    await fanout.fanout_many([group([2], PushHint(11, 1, 0))])
    other = LateMessages(redis, "node-b:1", ClusterView(), window=WINDOW)
    mine = LateMessages(redis, ME, ClusterView(), window=WINDOW)
    assert await other.take_late(2) is None  # not the holder: leaves it
    assert await mine.take_late(2) == 11
    assert await mine.take_late(2) is None  # taken once
    assert await redis.get(keys.push_gate(2)) == ME.encode()  # held for another window
    # a newer push supersedes what was late
    await redis.delete(keys.push_gate(2))
    await redis.set(keys.push_late(2), 12)
    assert (await fanout.fanout_many([group([2], PushHint(13, 1, 0))])).pushes == [(2, 13)]
    assert not await redis.exists(keys.push_late(2))


async def test_no_late_push_once_the_user_is_connected(fanout: Fanout, redis: RedisClient) -> None:
    await flag(redis, 2)
    await fanout.fanout_many([group([2], PushHint(10, 1, 0))])
    await fanout.fanout_many([group([2], PushHint(11, 1, 0))])
    await redis.hset(keys.presence(2), ME, 1)
    assert await LateMessages(redis, ME, ClusterView(), window=WINDOW).take_late(2) is None
    assert not await redis.exists(keys.push_late(2))


def test_windows_end_in_order_and_a_reopened_window_moves() -> None:
    windows = Windows()
    windows.open(1, 10.0)
    windows.open(2, 5.0)
    windows.open(1, 12.0)  # reopened later: the old end no longer counts
    windows.open(2, 4.0)  # never earlier than it was
    assert len(windows) == 2 and windows.next_end() == 5.0
    assert windows.pop_ended(4.9) is None
    assert windows.pop_ended(11.0) == 2
    assert windows.pop_ended(11.0) is None and windows.next_end() == 12.0
    assert windows.pop_ended(12.0) == 1
    assert windows.next_end() is None and len(windows) == 0


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("fcm.googleapis.com", None, True),
        ("fcm.googleapis.com", 443, True),
        ("FCM.googleapis.com.", None, True),
        ("fcm.googleapis.com", 8443, False),
        ("updates.push.services.mozilla.com", None, True),
        ("web.push.apple.com", None, True),
        ("push.apple.com", None, False),  # `*.` means a subdomain
        ("evilpush.apple.com", None, False),
        ("wns2-by3p.notify.windows.com", None, True),
        ("fcm.googleapis.com.evil.example", None, False),
        ("googleapis.com", None, False),
        ("localhost", None, False),
        ("127.0.0.1", None, False),
    ],
)
def test_default_allowed_hosts(host: str, port: int | None, allowed: bool) -> None:
    assert host_allowed(host, port, PUBLIC_PUSH_SERVICES) is allowed


def test_an_allowed_host_with_a_port_allows_that_port_only() -> None:
    assert host_allowed("localhost", 8443, ["localhost:8443"])
    assert not host_allowed("localhost", None, ["localhost:8443"])
    assert not host_allowed("localhost", 8444, ["localhost:8443"])


def test_a_real_looking_subscription_is_normalised() -> None:
    browser = Browser("https://fcm.googleapis.com/fcm/send/abc:def", "abc")
    keys_ = browser.subscription()["keys"]
    target = check_subscription(
        browser.endpoint, keys_["p256dh"] + "=", keys_["auth"] + "==", PUBLIC_PUSH_SERVICES
    )
    assert (target.p256dh, target.auth) == (keys_["p256dh"], keys_["auth"])
    with pytest.raises(InvalidSubscription):
        check_subscription("https://fcm.googleapis.com#x", keys_["p256dh"], keys_["auth"], ["*"])


def _message(text: str) -> PushedMessage:
    return PushedMessage(1, 2, "group", "title", 3, 4, "alice", text)


@pytest.mark.parametrize("text", ["short", "a" * 4000, "😀" * 4000, '"\\\x01' * 1333])
def test_a_payload_fits_a_push_and_cuts_only_the_text(text: str) -> None:
    without = json.loads(push_payload(_message(text), include_text=False))
    assert "text" not in without and without["sender"] == {"id": "4", "username": "alice"}
    encoded = push_payload(_message(text), include_text=True)
    assert len(encoded) <= MAX_PAYLOAD
    body = json.loads(encoded)
    assert text.startswith(body["text"])
    assert body.get("text_truncated", False) is (body["text"] != text)
    assert len(body["text"]) >= min(len(text), 300)  # cut to fit, not emptied
    assert {k: v for k, v in body.items() if not k.startswith("text")} == without


def test_allowed_hosts_come_from_one_comma_separated_variable() -> None:
    code = "from node.config import load_settings; print(load_settings().push_allowed_hosts)"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")},
        "MESSENGER_PUSH_ALLOWED_HOSTS": " push.example.com, *.Push.Example.org ,localhost:8443",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert out.stdout.strip() == "('push.example.com', '*.push.example.org', 'localhost:8443')"


async def test_flags_come_back_after_redis_forgot_them(
    storage: Storage, redis: RedisClient
) -> None:
    store = PushStore(storage.pool)
    users = [(await storage.users.create(f"user{i}", "x")).id for i in range(3)]
    for user in users[:2]:
        endpoint = f"https://fcm.googleapis.com/fcm/send/{user}"
        await store.add(user, endpoint, "p256dh", "auth", keep=10)
    flags = PushFlags(redis, store, interval=0.05)
    keeper = asyncio.create_task(flags.run())
    try:
        await poll(lambda: redis.exists(keys.PUSH_FLAGS_MARKER), bool)
        subscribed = [await redis.exists(keys.push_subscribed(u)) for u in users]
        assert subscribed == [1, 1, 0]
        await redis.flushdb()  # Redis restarted empty
        await poll(lambda: redis.exists(keys.PUSH_FLAGS_MARKER), bool)  # set after the flags
        assert await redis.exists(*(keys.push_subscribed(u) for u in users)) == 2
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    # the last subscription removed: the flag goes
    assert await store.remove(users[0], 9_000_000_000) is False
    (sub,) = await store.for_user(users[0])
    assert await store.remove(users[0], sub.id) is True
    await flags.refresh(users[0])
    assert not await redis.exists(keys.push_subscribed(users[0]))
