"""Web Push end to end: real nodes, PostgreSQL and Redis, and a local push service over HTTPS that
decrypts every push with the subscription's own keys (RFC 8291) and checks its VAPID signature
(RFC 8292).

A user none of whose devices is connected anywhere in the cluster gets pushes, coalesced (a burst
is the first message at once and the newest when the window ends); a connected user gets none;
the text only with the setting; a subscription its push service calls gone is deleted; only https
endpoints on allowed hosts are accepted.
"""

from __future__ import annotations

import base64
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.cluster import keys
from node.push.vapid import resolve_vapid_key
from tests.conftest import make_settings
from tests.push_service import (
    Browser,
    PushService,
    b64url,
    b64url_decode,
    check_vapid,
    poll,
)
from tests.support import NO_SUCH_ID, Account, Api, Response, assert_error

NodeApi = Callable[..., Awaitable[tuple[TestServer, Api]]]
SUBJECT = "mailto:ops@example.com"
SUBSCRIPTIONS = "/api/v1/push/subscriptions"


@pytest.fixture
async def push_service(tmp_path: Path) -> AsyncIterator[PushService]:
    service = PushService(tmp_path)
    await service.start()
    yield service
    await service.close()


async def start(node_api: NodeApi, service: PushService, **settings: Any) -> Api:
    """A node that trusts the local push service (its CA, its host) and nothing more."""
    values: dict[str, Any] = {
        "push_allowed_hosts": (service.host,),
        "push_ca_file": service.ca_file,
        "vapid_subject": SUBJECT,
        "push_coalesce": 1.0,
        **settings,
    }
    _, api = await node_api(**values)
    return api


async def subscribe(api: Api, who: Account, browser: Browser) -> str:
    r = await api.call("POST", SUBSCRIPTIONS, who.token, json=browser.subscription())
    assert r.status == 201, r
    assert set(r.body) == {"id"} and r.body["id"].isdigit()
    return str(r.body["id"])


async def public_key(api: Api, who: Account) -> str:
    r = await api.call("GET", "/api/v1/push/vapid-public-key", who.token)
    assert r.status == 200, r
    return str(r.body["public_key"])


def new_vapid_key() -> tuple[str, str]:
    """(private key as MESSENGER_VAPID_PRIVATE_KEY takes it, public key as the node gives it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(key.private_numbers().private_value.to_bytes(32, "big")), b64url(point)


def message_ids(sent: list[Response]) -> dict[int, str]:
    return {r.body["seq"]: r.body["id"] for r in sent}


# --- the REST contract ---------------------------------------------------------------------------


async def test_vapid_key_and_subscriptions_over_rest(
    node_api: NodeApi, push_service: PushService
) -> None:
    api = await start(node_api, push_service)
    alice, bob = await api.account(), await api.account()

    key = b64url_decode(await public_key(api, alice))
    assert len(key) == 65 and key[0] == 4  # an uncompressed P-256 point
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    assert_error(await api.call("GET", "/api/v1/push/vapid-public-key"), 401)

    browser = push_service.browser()
    first = await subscribe(api, alice, browser)
    assert await subscribe(api, alice, browser) == first  # the same endpoint keeps its id
    second = await subscribe(api, alice, push_service.browser())  # a user may have several
    assert second != first
    assert_error(await api.call("POST", SUBSCRIPTIONS, json=browser.subscription()), 401)

    # someone else's subscription is not found, like an unknown one; your own is deleted once
    assert_error(await api.call("DELETE", f"{SUBSCRIPTIONS}/{first}", bob.token), 404)
    assert_error(await api.call("DELETE", f"{SUBSCRIPTIONS}/{NO_SUCH_ID}", alice.token), 404)
    assert_error(await api.call("DELETE", f"{SUBSCRIPTIONS}/nope", alice.token), 404)
    assert (await api.call("DELETE", f"{SUBSCRIPTIONS}/{first}", alice.token)).status == 204
    assert_error(await api.call("DELETE", f"{SUBSCRIPTIONS}/{first}", alice.token), 404)
    assert (await api.call("DELETE", f"{SUBSCRIPTIONS}/{second}", alice.token)).status == 204


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://{host}/push/x",  # not https
        "https://evil.example/push/x",  # not an allowed host
        "https://127.0.0.1/push/x",
        "https://localhost/push/x",  # allowed host, other port
        "https://{host}@evil.example/push/x",  # userinfo: the host is evil.example
        "https://user@{host}/push/x",
        "https://{host}.evil.example/push/x",
        "ftp://{host}/push/x",
        "https:///push/x",
        "not a url",
        "https://{host}/" + "x" * 2100,
    ],
)
async def test_endpoints_off_the_allowed_push_services_are_refused(
    node_api: NodeApi, push_service: PushService, endpoint: str
) -> None:
    api = await start(node_api, push_service)
    alice = await api.account()
    body = push_service.browser().subscription()
    body["endpoint"] = endpoint.format(host=push_service.host)
    r = await api.call("POST", SUBSCRIPTIONS, alice.token, json=body)
    assert_error(r, 422, "validation_error")


def _bad_keys() -> list[dict[str, str]]:
    good = Browser("", "").subscription()["keys"]
    off_curve = b"\x04" + b"\x01" * 64
    return [
        {**good, "p256dh": good["p256dh"][:-4]},  # too short
        {**good, "p256dh": b64url(off_curve)},  # not a point of the curve
        {**good, "p256dh": "not base64!"},
        {**good, "auth": b64url(os.urandom(15))},
        {**good, "auth": b64url(os.urandom(32))},
        {"p256dh": good["p256dh"]},  # no auth
    ]


@pytest.mark.parametrize("bad", _bad_keys())
async def test_unusable_keys_are_refused(
    node_api: NodeApi, push_service: PushService, bad: dict[str, str]
) -> None:
    api = await start(node_api, push_service)
    alice = await api.account()
    body = {**push_service.browser().subscription(), "keys": bad}
    assert_error(await api.call("POST", SUBSCRIPTIONS, alice.token, json=body), 422)


async def test_standard_base64_with_padding_is_accepted_as_browsers_may_send_it(
    node_api: NodeApi, push_service: PushService
) -> None:
    api = await start(node_api, push_service)
    alice = await api.account()
    browser = push_service.browser()
    body = browser.subscription()
    body["keys"]["auth"] = base64.b64encode(browser.auth).decode()
    assert (await api.call("POST", SUBSCRIPTIONS, alice.token, json=body)).status == 201


# --- pushes --------------------------------------------------------------------------------------


async def test_a_burst_to_a_dormant_user_is_two_pushes(
    node_api: NodeApi, push_service: PushService, redis: aioredis.Redis
) -> None:
    """50 messages one after another in well under a window: the first is pushed at once, the
    newest when the window ends; the next message after the windows closed is pushed at once
    again. Every push decrypts with the subscription's keys and is signed with the node's VAPID
    key for the push service. (Sent all at once, the 50 are one commit batch: one push.)"""
    window = 3.0
    api = await start(node_api, push_service, push_coalesce=window)
    alice, bob = await api.account(), await api.account()
    chat = await api.direct(alice, bob)
    browser = push_service.browser()
    await subscribe(api, bob, browser)
    key = await public_key(api, bob)

    started = time.monotonic()
    burst = [await api.send(alice, chat, f"m{i}") for i in range(50)]
    took = time.monotonic() - started
    assert all(r.status == 201 for r in burst) and took < window * 0.8, took
    ids = message_ids(burst)

    await push_service.wait(2, browser)
    first, last = push_service.to(browser)
    assert first.payload["message_id"] == ids[1] and first.payload["seq"] == 1
    assert last.payload["message_id"] == ids[50] and last.payload["seq"] == 50
    assert last.at - first.at >= window * 0.9

    # the window the trailing push opened ends with nothing more to say
    await poll(lambda: redis.exists(keys.push_gate(int(bob.id))), lambda n: n == 0)
    after = await api.send(alice, chat, "after the windows")
    await push_service.wait(3, browser)
    pushes = push_service.to(browser)
    assert len(pushes) == 3 and len(push_service.pushes) == 3
    assert pushes[2].payload["message_id"] == after.body["id"]

    for push in pushes:
        assert push.payload["type"] == "message"
        assert push.payload["chat_id"] == chat and push.payload["chat_kind"] == "direct"
        assert push.payload["sender"] == {"id": alice.id, "username": alice.username}
        assert "text" not in push.payload  # not without MESSENGER_PUSH_INCLUDE_TEXT
        check_vapid(push, key, push_service.origin, SUBJECT)
        assert push.headers["Topic"] == f"chat-{chat}"
    print(f"\nburst of 50 messages in {took:.2f}s -> {len(pushes) - 1} pushes")


async def test_text_is_pushed_only_with_the_setting(
    node_api: NodeApi, push_service: PushService
) -> None:
    api = await start(node_api, push_service, push_include_text=True)
    alice, bob = await api.account(), await api.account()
    group = await api.group(alice, [bob], title="team")
    browser = push_service.browser()
    await subscribe(api, bob, browser)
    sent = await api.send(alice, group, "lunch at noon? 🍜")
    await push_service.wait(1, browser)
    (push,) = push_service.to(browser)
    assert push.payload["text"] == "lunch at noon? 🍜"
    assert push.payload["message_id"] == sent.body["id"]
    assert push.payload["chat_kind"] == "group" and push.payload["chat_title"] == "team"
    assert "text_truncated" not in push.payload


async def test_a_connected_user_gets_no_push(node_api: NodeApi, push_service: PushService) -> None:
    api = await start(node_api, push_service)
    alice, bob = await api.account(), await api.account()
    chat = await api.direct(alice, bob)
    browser = push_service.browser()
    await subscribe(api, bob, browser)
    watcher = await api.ws(alice, "watch")
    phone = await api.ws(bob, "phone")
    await watcher.next("presence", where=lambda f: f["user_id"] == bob.id and f["online"])

    for i in range(3):
        assert (await api.send(alice, chat, f"live {i}")).status == 201
    assert len(await phone.messages(3, chat)) == 3

    # once bob's last device left, the next message is pushed, and it is the only push
    await phone.close()
    await watcher.next("presence", where=lambda f: f["user_id"] == bob.id and not f["online"])
    later = await api.send(alice, chat, "are you there?")
    await push_service.wait(1, browser)
    assert [p.payload["message_id"] for p in push_service.pushes] == [later.body["id"]]


async def test_nobody_is_pushed_about_their_own_messages(
    node_api: NodeApi, push_service: PushService
) -> None:
    api = await start(node_api, push_service)
    alice, bob = await api.account(), await api.account()
    chat = await api.direct(alice, bob)
    alices, bobs = push_service.browser(), push_service.browser()
    await subscribe(api, alice, alices)
    await subscribe(api, bob, bobs)
    sent = await api.send(alice, chat, "hi bob")  # both dormant: only bob is owed a push
    await push_service.wait(1, bobs)
    reply = await api.send(bob, chat, "hi alice")
    await push_service.wait(1, alices)
    assert [p.payload["message_id"] for p in push_service.to(alices)] == [reply.body["id"]]
    assert [p.payload["message_id"] for p in push_service.to(bobs)] == [sent.body["id"]]


@pytest.mark.parametrize("gone", [404, 410])
async def test_a_subscription_the_push_service_calls_gone_is_deleted(
    node_api: NodeApi,
    push_service: PushService,
    redis: aioredis.Redis,
    database_url: str,
    gone: int,
) -> None:
    api = await start(node_api, push_service)
    alice, bob = await api.account(), await api.account()
    chat = await api.direct(alice, bob)
    dead, alive = push_service.browser(gone), push_service.browser()
    dead_id = await subscribe(api, bob, dead)
    alive_id = await subscribe(api, bob, alive)
    await api.send(alice, chat, "hello")
    await push_service.wait(1, dead)
    await push_service.wait(1, alive)

    conn = await asyncpg.connect(database_url)
    try:
        await poll(
            lambda: conn.fetchval(
                "SELECT count(*) FROM push_subscriptions WHERE id = $1", int(dead_id)
            ),
            lambda n: n == 0,
        )
    finally:
        await conn.close()
    assert_error(await api.call("DELETE", f"{SUBSCRIPTIONS}/{dead_id}", bob.token), 404)
    flag = keys.push_subscribed(int(bob.id))
    assert await redis.exists(flag) == 1  # one subscription is left
    assert (await api.call("DELETE", f"{SUBSCRIPTIONS}/{alive_id}", bob.token)).status == 204
    assert await redis.exists(flag) == 0  # none left: the fan-out stops looking


async def test_a_failing_push_service_is_tried_again(
    node_api: NodeApi, push_service: PushService
) -> None:
    api = await start(node_api, push_service)
    alice, bob = await api.account(), await api.account()
    chat = await api.direct(alice, bob)
    browser = push_service.browser(503)
    sub_id = await subscribe(api, bob, browser)
    sent = await api.send(alice, chat, "hello")
    await push_service.wait(2, browser)
    first, again = push_service.to(browser)
    assert first.payload == again.payload and first.payload["message_id"] == sent.body["id"]
    assert again.at - first.at >= 0.9  # the first retry delay
    # the subscription is kept
    assert (await api.call("DELETE", f"{SUBSCRIPTIONS}/{sub_id}", bob.token)).status == 204


async def test_a_device_on_another_node_means_no_push(
    node_api: NodeApi, push_service: PushService
) -> None:
    """Nodes of one cluster sign with one key (set by the operator when data dirs differ); a
    device of bob's on node B keeps node A from pushing to him."""
    private, _ = new_vapid_key()
    a = await start(node_api, push_service, vapid_private_key=private)
    b = await start(node_api, push_service, vapid_private_key=private)
    alice, bob = await a.account(), await a.account()
    chat = await a.direct(alice, bob)
    assert await public_key(a, alice) == await public_key(b, bob)
    browser = push_service.browser()
    await subscribe(b, bob, browser)
    watcher = await a.ws(alice, "watch")
    phone = await b.ws(bob, "phone")
    await watcher.next("presence", where=lambda f: f["user_id"] == bob.id and f["online"])

    for i in range(3):
        assert (await a.send(alice, chat, f"to node B {i}")).status == 201
    assert len(await phone.messages(3, chat)) == 3

    await phone.close()
    await watcher.next("presence", where=lambda f: f["user_id"] == bob.id and not f["online"])
    later = await a.send(alice, chat, "gone?")
    await push_service.wait(1, browser)
    assert [p.payload["message_id"] for p in push_service.pushes] == [later.body["id"]]
    check_vapid(push_service.pushes[0], await public_key(b, bob), push_service.origin, SUBJECT)


# --- the VAPID key -------------------------------------------------------------------------------


def test_the_generated_key_is_kept_and_shared_through_the_data_dir(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = resolve_vapid_key(settings)
    again = resolve_vapid_key(make_settings(tmp_path))  # another node on the same data dir
    assert first.public_key == again.public_key
    path = settings.data_dir / "vapid_private_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = resolve_vapid_key(make_settings(tmp_path / "elsewhere"))
    assert other.public_key != first.public_key


def test_a_configured_key_is_used_as_given(tmp_path: Path) -> None:
    private, public = new_vapid_key()
    assert (
        resolve_vapid_key(make_settings(tmp_path, vapid_private_key=private)).public_key == public
    )
    assert not (tmp_path / "data" / "vapid_private_key").exists()
