"""`/api/v1/chats/{id}/messages` over a real node: sending (seqs, idempotency, text rules), history
pages, visibility, concurrent senders, and the per-user rate limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from node.http import schemas
from node.storage import Storage
from tests.support import NO_SUCH_ID, Account, Api, Response, assert_error


async def post(api: Api, who: Account, chat_id: str, body: Any) -> Response:
    return await api.call("POST", f"/api/v1/chats/{chat_id}/messages", who.token, json=body)


async def sent(api: Api, who: Account, chat_id: str, text: str = "hi") -> dict[str, Any]:
    r = await api.send(who, chat_id, text)
    assert r.status == 201, r
    schemas.Message.model_validate(r.body)
    return dict(r.body)


async def rows(storage: Storage, chat_id: str) -> list[int]:
    """The seqs of the chat's stored messages, ascending."""
    records = await storage.pool.fetch(
        "SELECT seq FROM messages WHERE chat_id = $1 ORDER BY seq", int(chat_id)
    )
    return [r["seq"] for r in records]


async def page(api: Api, who: Account, chat_id: str, **params: Any) -> list[int]:
    r = await api.call("GET", f"/api/v1/chats/{chat_id}/messages", who.token, params=params)
    assert r.status == 200, r
    schemas.MessageList.model_validate(r.body)
    return [m["seq"] for m in r.body["items"]]


@pytest.fixture
async def pair(api: Api) -> tuple[Account, Account, str]:
    alice, bob = await api.account(), await api.account()
    return alice, bob, await api.direct(alice, bob)


# --- sending -----------------------------------------------------------------------------------


async def test_send_is_201_with_the_message(api: Api, pair: tuple[Account, Account, str]) -> None:
    alice, _, chat_id = pair
    r = await post(api, alice, chat_id, {"client_msg_id": "m-1", "text": "hello"})
    assert r.status == 201, r
    message = schemas.Message.model_validate(r.body)
    assert message.chat_id == chat_id and message.sender_id == alice.id
    assert (message.seq, message.client_msg_id, message.text) == (1, "m-1", "hello")
    assert message.attachments == []
    assert r.body["created_at"].endswith("Z")


async def test_seqs_are_1_2_3_across_senders(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    alice, bob, chat_id = pair
    seqs = [(await sent(api, who, chat_id))["seq"] for who in (alice, bob, alice)]
    assert seqs == [1, 2, 3]
    assert await rows(storage, chat_id) == [1, 2, 3]


async def test_seqs_are_per_chat(api: Api, pair: tuple[Account, Account, str]) -> None:
    alice, bob, chat_id = pair
    other = await api.group(alice, [bob])
    await sent(api, alice, chat_id)
    await sent(api, alice, chat_id)
    assert (await sent(api, alice, other))["seq"] == 1


async def test_repeated_client_msg_id_returns_the_original_with_200(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    alice, _, chat_id = pair
    first = await post(api, alice, chat_id, {"client_msg_id": "once", "text": "original"})
    again = await post(api, alice, chat_id, {"client_msg_id": "once", "text": "different"})
    assert first.status == 201 and again.status == 200, again
    assert again.body == first.body
    assert await rows(storage, chat_id) == [1]
    assert [m["text"] for m in await api.history(alice, chat_id)] == ["original"]
    assert (await sent(api, alice, chat_id))["seq"] == 2  # the repeat used no seq


async def test_same_client_msg_id_in_another_chat_is_409(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    alice, bob, chat_id = pair
    other = await api.group(alice, [bob])
    assert (await post(api, alice, chat_id, {"client_msg_id": "x1", "text": "a"})).status == 201
    r = await post(api, alice, other, {"client_msg_id": "x1", "text": "a"})
    assert_error(r, 409, "idempotency_conflict")
    assert await rows(storage, other) == []


async def test_client_msg_id_is_unique_per_sender_only(
    api: Api, pair: tuple[Account, Account, str]
) -> None:
    alice, bob, chat_id = pair
    a = await post(api, alice, chat_id, {"client_msg_id": "same", "text": "from alice"})
    b = await post(api, bob, chat_id, {"client_msg_id": "same", "text": "from bob"})
    assert a.status == 201 and b.status == 201, b
    assert (a.body["seq"], b.body["seq"]) == (1, 2)


@pytest.mark.parametrize(
    "text",
    ["x" * 4000, "é" * 4000, "😀" * 4000, "世界 👋 שלום\n\ttabs", "a", " "],
    ids=["4000-ascii", "4000-accents", "4000-emoji", "mixed", "1", "space"],
)
async def test_text_of_1_to_4000_characters_round_trips(
    api: Api, pair: tuple[Account, Account, str], text: str
) -> None:
    alice, bob, chat_id = pair
    message = await sent(api, alice, chat_id, text)
    assert message["text"] == text
    (stored,) = await api.history(bob, chat_id)
    assert stored["text"] == text


@pytest.mark.parametrize(
    "text", ["", "x" * 4001, "😀" * 4001], ids=["empty", "4001-ascii", "4001-emoji"]
)
async def test_text_outside_1_to_4000_is_422(
    api: Api, storage: Storage, pair: tuple[Account, Account, str], text: str
) -> None:
    alice, _, chat_id = pair
    r = await post(api, alice, chat_id, {"client_msg_id": "c", "text": text})
    assert_error(r, 422, "validation_error")
    assert await rows(storage, chat_id) == []


@pytest.mark.parametrize(
    "body",
    [
        {"text": "no id"},
        {"client_msg_id": "c"},
        {"client_msg_id": "", "text": "t"},
        {"client_msg_id": "c" * 65, "text": "t"},
        {"client_msg_id": 5, "text": "t"},
        {"client_msg_id": "c", "text": 5},
        {"client_msg_id": "c", "text": None},
        {"client_msg_id": "c", "text": "t", "attachments": "m1"},
        {"client_msg_id": "c", "text": "t", "attachments": [""]},
        {"client_msg_id": "c", "text": "t", "seq": 7},
        {"client_msg_id": "c", "text": "t", "chat_id": "1"},
    ],
    ids=repr,
)
async def test_invalid_send_body_is_422(
    api: Api, storage: Storage, pair: tuple[Account, Account, str], body: dict[str, Any]
) -> None:
    alice, _, chat_id = pair
    assert_error(await post(api, alice, chat_id, body), 422, "validation_error")
    assert await rows(storage, chat_id) == []


async def test_client_msg_id_of_64_characters_is_accepted(
    api: Api, pair: tuple[Account, Account, str]
) -> None:
    alice, _, chat_id = pair
    r = await post(api, alice, chat_id, {"client_msg_id": "c" * 64, "text": "t"})
    assert r.status == 201 and r.body["client_msg_id"] == "c" * 64, r


async def test_unknown_attachment_is_refused(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    alice, _, chat_id = pair
    r = await post(api, alice, chat_id, {"client_msg_id": "c", "text": "t", "attachments": ["404"]})
    assert_error(r, 422, "unknown_media")
    assert await rows(storage, chat_id) == []


async def test_send_to_a_chat_you_are_not_in_is_404(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    _, _, chat_id = pair
    eve = await api.account()
    assert_error(await api.send(eve, chat_id, "let me in"), 404, "not_member")
    assert await rows(storage, chat_id) == []


async def test_send_to_a_chat_that_does_not_exist_is_404_at_once(api: Api) -> None:
    alice = await api.account()
    started = time.monotonic()
    r = await api.send(alice, NO_SUCH_ID, "anyone?")
    assert_error(r, 404, "not_member")
    assert time.monotonic() - started < 3.0  # refused, not timed out into a 503


async def test_refused_send_does_not_burn_the_client_msg_id(
    api: Api, pair: tuple[Account, Account, str]
) -> None:
    alice, bob, chat_id = pair
    outside = await api.group(bob, [])
    assert_error(await api.send(alice, outside, "no", cmid="reuse-me"), 404)
    r = await api.send(alice, chat_id, "yes", cmid="reuse-me")
    assert r.status == 201, r


# --- history -----------------------------------------------------------------------------------


async def test_history_is_ascending_with_full_messages(
    api: Api, pair: tuple[Account, Account, str]
) -> None:
    alice, bob, chat_id = pair
    texts = ["one", "two", "three"]
    for who, text in zip((alice, bob, alice), texts, strict=True):
        await sent(api, who, chat_id, text)
    r = await api.call("GET", f"/api/v1/chats/{chat_id}/messages", bob.token)
    assert r.status == 200, r
    history = schemas.MessageList.model_validate(r.body).items
    assert [(m.seq, m.text) for m in history] == [(1, "one"), (2, "two"), (3, "three")]
    assert [m.sender_id for m in history] == [alice.id, bob.id, alice.id]


async def test_history_of_an_empty_chat_is_empty(
    api: Api, pair: tuple[Account, Account, str]
) -> None:
    alice, _, chat_id = pair
    assert await page(api, alice, chat_id) == []


async def test_history_pages(api: Api, pair: tuple[Account, Account, str]) -> None:
    alice, _, chat_id = pair
    for _ in range(7):
        await sent(api, alice, chat_id)
    assert await page(api, alice, chat_id, after_seq=2, limit=3) == [3, 4, 5]
    assert await page(api, alice, chat_id, after_seq=5) == [6, 7]
    assert await page(api, alice, chat_id, after_seq=7) == []
    assert await page(api, alice, chat_id, after_seq=0, limit=2) == [1, 2]
    assert await page(api, alice, chat_id, before_seq=5) == [1, 2, 3, 4]
    assert await page(api, alice, chat_id, before_seq=6, limit=2) == [4, 5]  # newest below 6
    assert await page(api, alice, chat_id, before_seq=1) == []
    assert await page(api, alice, chat_id, after_seq=2, before_seq=6) == [3, 4, 5]
    assert await page(api, alice, chat_id, after_seq=2, before_seq=6, limit=2) == [3, 4]
    assert await page(api, alice, chat_id, after_seq=4, before_seq=3) == []
    assert await page(api, alice, chat_id, limit=3) == [5, 6, 7]  # newest page


async def test_history_limit_defaults_to_50_and_allows_200(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    alice, _, chat_id = pair
    await asyncio.gather(*(sent(api, alice, chat_id) for _ in range(60)))
    assert await page(api, alice, chat_id) == list(range(11, 61))
    assert await page(api, alice, chat_id, after_seq=0) == list(range(1, 51))
    assert await page(api, alice, chat_id, limit=200) == list(range(1, 61))


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "201"},
        {"limit": "0"},
        {"limit": "-1"},
        {"after_seq": "-1"},
        {"before_seq": "x"},
        {"after_seq": "1.5"},
    ],
    ids=repr,
)
async def test_bad_history_parameters_are_422(
    api: Api, pair: tuple[Account, Account, str], params: dict[str, str]
) -> None:
    alice, _, chat_id = pair
    r = await api.call("GET", f"/api/v1/chats/{chat_id}/messages", alice.token, params=params)
    assert_error(r, 422, "validation_error")


async def test_history_of_a_chat_you_are_not_in_is_404(
    api: Api, pair: tuple[Account, Account, str]
) -> None:
    alice, _, chat_id = pair
    await sent(api, alice, chat_id, "private")
    eve = await api.account()
    hidden = await api.call("GET", f"/api/v1/chats/{chat_id}/messages", eve.token)
    absent = await api.call("GET", f"/api/v1/chats/{NO_SUCH_ID}/messages", eve.token)
    assert_error(hidden, 404, "not_member")
    assert hidden.body == absent.body


# --- concurrency -------------------------------------------------------------------------------


async def test_concurrent_sends_get_gap_free_seqs(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    alice, bob, chat_id = pair
    senders = [alice, bob] * 25
    replies = await asyncio.gather(
        *(api.send(who, chat_id, f"m{i}") for i, who in enumerate(senders))
    )
    assert all(r.status == 201 for r in replies), [r for r in replies if r.status != 201]
    assert sorted(r.body["seq"] for r in replies) == list(range(1, 51))
    assert await rows(storage, chat_id) == list(range(1, 51))
    assert (
        await storage.pool.fetchval("SELECT last_seq FROM chats WHERE id = $1", int(chat_id)) == 50
    )
    by_seq = {r.body["seq"]: r.body["text"] for r in replies}
    assert {m["seq"]: m["text"] for m in await api.history(alice, chat_id, limit=50)} == by_seq


async def test_concurrent_repeats_of_one_client_msg_id_store_one_message(
    api: Api, storage: Storage, pair: tuple[Account, Account, str]
) -> None:
    alice, _, chat_id = pair
    replies = await asyncio.gather(
        *(api.send(alice, chat_id, f"t{i}", cmid="dup") for i in range(10))
    )
    assert sorted(r.status for r in replies) == [200] * 9 + [201]
    assert len({r.body["id"] for r in replies}) == 1
    assert await rows(storage, chat_id) == [1]


# --- rate limit --------------------------------------------------------------------------------


@pytest.fixture
async def limited_api(node_api: Callable[..., Any]) -> Api:
    """A node allowing a burst of 3 sends per user, refilled too slowly to matter here."""
    _server, api = await node_api(rate_burst=3, rate_per_second=0.01)
    return api


async def test_sends_past_the_burst_are_429(limited_api: Api, storage: Storage) -> None:
    api = limited_api
    alice, bob = await api.account(), await api.account()
    chat_id = await api.direct(alice, bob)
    for _ in range(3):
        assert (await api.send(alice, chat_id, "ok")).status == 201
    assert_error(await api.send(alice, chat_id, "one too many"), 429, "rate_limited")
    assert await rows(storage, chat_id) == [1, 2, 3]
    assert (await api.send(bob, chat_id, "bob has his own bucket")).status == 201
