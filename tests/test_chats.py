"""`/api/v1/chats*` over a real node: direct chats and groups, the chat list, counters, members,
and the visibility rule (a chat you are not in looks exactly like one that does not exist)."""

from __future__ import annotations

from typing import Any

import pytest

from node.http import schemas
from node.storage import Storage
from tests.support import NO_SUCH_ID, Account, Api, Response, assert_error


async def create(api: Api, who: Account, body: Any) -> Response:
    return await api.call("POST", "/api/v1/chats", who.token, json=body)


async def get_chat(api: Api, who: Account, chat_id: str) -> Response:
    return await api.call("GET", f"/api/v1/chats/{chat_id}", who.token)


async def chat_view(api: Api, who: Account, chat_id: str) -> dict[str, Any]:
    r = await get_chat(api, who, chat_id)
    assert r.status == 200, r
    schemas.Chat.model_validate(r.body)
    return dict(r.body)


async def listed(api: Api, who: Account) -> list[dict[str, Any]]:
    r = await api.call("GET", "/api/v1/chats", who.token)
    assert r.status == 200, r
    schemas.ChatList.model_validate(r.body)
    return list(r.body["items"])


async def add_member(api: Api, who: Account, chat_id: str, user_id: str) -> Response:
    return await api.call(
        "POST", f"/api/v1/chats/{chat_id}/members", who.token, json={"user_id": user_id}
    )


async def remove_member(api: Api, who: Account, chat_id: str, user_id: str) -> Response:
    return await api.call("DELETE", f"/api/v1/chats/{chat_id}/members/{user_id}", who.token)


async def sent(api: Api, who: Account, chat_id: str, text: str = "hi") -> int:
    r = await api.send(who, chat_id, text)
    assert r.status == 201, r
    return int(r.body["seq"])


def member_ids(chat: dict[str, Any]) -> list[str]:
    return sorted(m["id"] for m in chat["members"])


# --- direct chats ------------------------------------------------------------------------------


async def test_direct_chat_is_created_with_both_members(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    r = await create(api, alice, {"kind": "direct", "user_id": bob.id})
    assert r.status == 201, r
    chat = schemas.Chat.model_validate(r.body)
    assert chat.kind == "direct" and chat.title is None and chat.owner_id is None
    assert member_ids(r.body) == sorted([alice.id, bob.id])
    assert (chat.last_seq, chat.read_seq, chat.unread_count) == (0, 0, 0)
    assert r.body["created_at"].endswith("Z")


async def test_direct_chat_accepts_a_numeric_user_id(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    r = await create(api, alice, {"kind": "direct", "user_id": int(bob.id)})
    assert r.status == 201, r


async def test_direct_chat_again_returns_the_existing_one_with_200(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    first = await create(api, alice, {"kind": "direct", "user_id": bob.id})
    again = await create(api, alice, {"kind": "direct", "user_id": bob.id})
    reverse = await create(api, bob, {"kind": "direct", "user_id": alice.id})
    assert first.status == 201
    assert again.status == 200 and reverse.status == 200
    assert first.body["id"] == again.body["id"] == reverse.body["id"]
    schemas.Chat.model_validate(again.body)
    assert len(await listed(api, alice)) == 1


async def test_direct_chat_with_yourself_is_422(api: Api, storage: Storage) -> None:
    alice = await api.account()
    r = await create(api, alice, {"kind": "direct", "user_id": alice.id})
    assert_error(r, 422, "validation_error")
    assert await storage.pool.fetchval("SELECT count(*) FROM chats") == 0


async def test_direct_chat_with_unknown_user_is_404(api: Api, storage: Storage) -> None:
    alice = await api.account()
    r = await create(api, alice, {"kind": "direct", "user_id": NO_SUCH_ID})
    assert_error(r, 404, "not_found")
    assert await storage.pool.fetchval("SELECT count(*) FROM chats") == 0


# --- groups ------------------------------------------------------------------------------------


async def test_group_creator_is_owner_and_member_without_being_listed(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    r = await create(
        api, alice, {"kind": "group", "title": "Trip", "member_ids": [bob.id, carol.id]}
    )
    assert r.status == 201, r
    chat = schemas.Chat.model_validate(r.body)
    assert chat.kind == "group" and chat.title == "Trip" and chat.owner_id == alice.id
    assert member_ids(r.body) == sorted([alice.id, bob.id, carol.id])
    assert (await get_chat(api, bob, r.body["id"])).status == 200


async def test_group_with_no_members_has_just_the_creator(api: Api) -> None:
    alice = await api.account()
    r = await create(api, alice, {"kind": "group", "title": "Notes"})
    assert r.status == 201, r
    assert member_ids(r.body) == [alice.id]


async def test_group_members_listed_twice_or_with_the_creator_count_once(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    r = await create(
        api, alice, {"kind": "group", "title": "G", "member_ids": [bob.id, bob.id, alice.id]}
    )
    assert r.status == 201, r
    assert member_ids(r.body) == sorted([alice.id, bob.id])


async def test_group_with_an_unknown_member_is_404_and_not_created(
    api: Api, storage: Storage
) -> None:
    alice, bob = await api.account(), await api.account()
    r = await create(
        api, alice, {"kind": "group", "title": "G", "member_ids": [bob.id, NO_SUCH_ID]}
    )
    assert_error(r, 404, "not_found")
    assert await storage.pool.fetchval("SELECT count(*) FROM chats") == 0
    assert await listed(api, alice) == []


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "channel", "title": "x"},
        {"kind": "direct"},
        {"kind": "direct", "user_id": "abc"},
        {"kind": "direct", "user_id": True},
        {"kind": "direct", "user_id": 1.5},
        {"kind": "direct", "user_id": "99999999999999999999"},
        {"kind": "direct", "user_id": "1", "title": "no titles here"},
        {"kind": "group"},
        {"kind": "group", "title": ""},
        {"kind": "group", "title": "x" * 201},
        {"kind": "group", "title": 7},
        {"kind": "group", "title": "x", "member_ids": "1"},
        {"kind": "group", "title": "x", "member_ids": ["one"]},
        {"kind": "group", "title": "x", "owner_id": "1"},
        {"title": "x"},
    ],
    ids=repr,
)
async def test_invalid_chat_creation_is_422(api: Api, body: dict[str, Any]) -> None:
    alice = await api.account()
    assert_error(await create(api, alice, body), 422, "validation_error")


async def test_group_title_of_200_characters_is_accepted(api: Api) -> None:
    alice = await api.account()
    r = await create(api, alice, {"kind": "group", "title": "é" * 200})
    assert r.status == 201 and r.body["title"] == "é" * 200, r


# --- reading chats -----------------------------------------------------------------------------


async def test_get_chat_has_members(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    chat_id = await api.group(alice, [bob], title="G")
    chat = await chat_view(api, bob, chat_id)
    assert chat["id"] == chat_id and chat["title"] == "G" and chat["owner_id"] == alice.id
    assert member_ids(chat) == sorted([alice.id, bob.id])
    for member in chat["members"]:
        schemas.User.model_validate(member)
    assert {m["username"] for m in chat["members"]} == {alice.username, bob.username}


async def test_list_holds_only_your_chats(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    ab = await api.direct(alice, bob)
    bc = await api.direct(bob, carol)
    assert [c["id"] for c in await listed(api, alice)] == [ab]
    assert {c["id"] for c in await listed(api, bob)} == {ab, bc}
    assert [c["id"] for c in await listed(api, carol)] == [bc]


async def test_list_is_most_recent_activity_first(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    older = await api.direct(alice, bob)
    newer = await api.direct(alice, carol)
    assert [c["id"] for c in await listed(api, alice)] == [newer, older]
    await sent(api, bob, older)
    assert [c["id"] for c in await listed(api, alice)] == [older, newer]
    await sent(api, alice, newer)
    assert [c["id"] for c in await listed(api, alice)] == [newer, older]


async def test_counters_after_sends(api: Api) -> None:
    """unread_count counts the others' messages above your read mark, never your own."""
    alice, bob = await api.account(), await api.account()
    chat_id = await api.direct(alice, bob)
    for _ in range(3):
        await sent(api, alice, chat_id)
    for _ in range(2):
        await sent(api, bob, chat_id)
    a, b = await chat_view(api, alice, chat_id), await chat_view(api, bob, chat_id)
    assert (a["last_seq"], a["read_seq"], a["unread_count"]) == (5, 0, 2)
    assert (b["last_seq"], b["read_seq"], b["unread_count"]) == (5, 0, 3)
    (listed_a,) = await listed(api, alice)
    assert (listed_a["last_seq"], listed_a["read_seq"], listed_a["unread_count"]) == (5, 0, 2)


async def test_read_mark_lowers_unread_count(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    chat_id = await api.direct(alice, bob)
    for who in (alice, alice, alice, bob, alice, alice):  # seqs 1..6
        await sent(api, who, chat_id)
    alice_ws, bob_ws = await api.ws(alice), await api.ws(bob)
    await bob_ws.send({"type": "read", "chat_id": chat_id, "seq": 5})
    await alice_ws.next("read", where=lambda f: f["user_id"] == bob.id)
    b = await chat_view(api, bob, chat_id)
    assert (b["last_seq"], b["read_seq"], b["unread_count"]) == (6, 5, 1)
    a = await chat_view(api, alice, chat_id)
    assert (a["read_seq"], a["unread_count"]) == (0, 1)


async def test_chat_you_are_not_in_looks_like_no_chat(api: Api) -> None:
    alice, bob, eve = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    await sent(api, alice, chat_id)
    for method, suffix, body in [
        ("GET", "", None),
        ("GET", "/messages", None),
        ("POST", "/messages", {"client_msg_id": "probe", "text": "hi"}),
        ("POST", "/members", {"user_id": eve.id}),
        ("DELETE", f"/members/{eve.id}", None),
        ("DELETE", f"/members/{bob.id}", None),
    ]:
        hidden = await api.call(method, f"/api/v1/chats/{chat_id}{suffix}", eve.token, json=body)
        absent = await api.call(method, f"/api/v1/chats/{NO_SUCH_ID}{suffix}", eve.token, json=body)
        assert_error(hidden, 404, "not_member")
        assert (hidden.status, hidden.body) == (absent.status, absent.body), (method, suffix)
    assert member_ids(await chat_view(api, alice, chat_id)) == sorted([alice.id, bob.id])


@pytest.mark.parametrize("segment", ["abc", "0", "-1", "1.0", "99999999999999999999"], ids=repr)
async def test_chat_id_that_cannot_be_an_id_is_404(api: Api, segment: str) -> None:
    alice = await api.account()
    assert_error(await get_chat(api, alice, segment), 404, "not_found")


# --- adding members ----------------------------------------------------------------------------


async def test_owner_adds_a_member(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    r = await add_member(api, alice, chat_id, carol.id)
    assert r.status == 200, r
    schemas.Chat.model_validate(r.body)
    assert member_ids(r.body) == sorted([alice.id, bob.id, carol.id])
    assert [c["id"] for c in await listed(api, carol)] == [chat_id]


async def test_adding_an_existing_member_changes_nothing(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    r = await add_member(api, alice, chat_id, bob.id)
    assert r.status == 200, r
    assert member_ids(r.body) == sorted([alice.id, bob.id])


async def test_only_the_owner_adds_members(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    assert_error(await add_member(api, bob, chat_id, carol.id), 403, "forbidden")
    assert member_ids(await chat_view(api, alice, chat_id)) == sorted([alice.id, bob.id])


async def test_direct_chat_has_no_member_changes(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    chat_id = await api.direct(alice, bob)
    assert_error(await add_member(api, alice, chat_id, carol.id), 403, "forbidden")
    assert_error(await remove_member(api, alice, chat_id, bob.id), 403, "forbidden")
    assert_error(await remove_member(api, alice, chat_id, alice.id), 403, "forbidden")
    assert member_ids(await chat_view(api, bob, chat_id)) == sorted([alice.id, bob.id])


async def test_adding_an_unknown_user_is_404(api: Api) -> None:
    alice = await api.account()
    chat_id = await api.group(alice, [])
    assert_error(await add_member(api, alice, chat_id, NO_SUCH_ID), 404, "not_found")


@pytest.mark.parametrize(
    "body", [{}, {"user_id": "x"}, {"user_id": None}, {"user_id": "1", "role": "admin"}], ids=repr
)
async def test_invalid_add_member_body_is_422(api: Api, body: dict[str, Any]) -> None:
    alice = await api.account()
    chat_id = await api.group(alice, [])
    r = await api.call("POST", f"/api/v1/chats/{chat_id}/members", alice.token, json=body)
    assert_error(r, 422, "validation_error")


async def test_member_added_later_reads_older_history(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    for text in ("one", "two", "three"):
        await sent(api, alice, chat_id, text)
    assert (await add_member(api, alice, chat_id, carol.id)).status == 200
    history = await api.history(carol, chat_id)
    assert [(m["seq"], m["text"]) for m in history] == [(1, "one"), (2, "two"), (3, "three")]
    view = await chat_view(api, carol, chat_id)
    assert view["last_seq"] == 3 and view["unread_count"] == 0  # joined after them
    await sent(api, bob, chat_id, "four")
    assert (await chat_view(api, carol, chat_id))["unread_count"] == 1


# --- removing members --------------------------------------------------------------------------


async def test_member_leaves_and_then_cannot_see_the_chat(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    await sent(api, alice, chat_id)
    r = await remove_member(api, bob, chat_id, bob.id)
    assert r.status == 204 and r.body is None, r
    assert_error(await get_chat(api, bob, chat_id), 404, "not_member")
    assert_error(
        await api.call("GET", f"/api/v1/chats/{chat_id}/messages", bob.token), 404, "not_member"
    )
    assert_error(await api.send(bob, chat_id, "still here?"), 404, "not_member")
    assert await listed(api, bob) == []
    assert member_ids(await chat_view(api, alice, chat_id)) == [alice.id]


async def test_owner_removes_a_member(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob, carol])
    assert (await remove_member(api, alice, chat_id, bob.id)).status == 204
    assert member_ids(await chat_view(api, alice, chat_id)) == sorted([alice.id, carol.id])
    assert_error(await get_chat(api, bob, chat_id), 404, "not_member")
    assert_error(
        await api.call("GET", f"/api/v1/chats/{chat_id}/messages", bob.token), 404, "not_member"
    )


async def test_owner_stays_owner_after_removing_a_member(api: Api) -> None:
    """The owner registered after the members (higher id): removing one of them must not hand
    the group to anybody."""
    bob, carol, alice = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob, carol])
    assert (await remove_member(api, alice, chat_id, carol.id)).status == 204
    assert (await chat_view(api, alice, chat_id))["owner_id"] == alice.id
    dave = await api.account()
    assert (await add_member(api, alice, chat_id, dave.id)).status == 200
    assert_error(await remove_member(api, bob, chat_id, dave.id), 403, "forbidden")


async def test_member_leaving_does_not_change_the_owner(api: Api) -> None:
    bob, carol, alice = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob, carol])
    assert (await remove_member(api, bob, chat_id, bob.id)).status == 204
    assert (await chat_view(api, alice, chat_id))["owner_id"] == alice.id


async def test_owner_leaving_hands_the_group_to_the_longest_standing_member(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    assert (await add_member(api, alice, chat_id, carol.id)).status == 200
    assert (await remove_member(api, alice, chat_id, alice.id)).status == 204
    assert (await chat_view(api, carol, chat_id))["owner_id"] == bob.id


async def test_non_owner_cannot_remove_another_member(api: Api) -> None:
    alice, bob, carol = await api.account(), await api.account(), await api.account()
    chat_id = await api.group(alice, [bob, carol])
    assert_error(await remove_member(api, bob, chat_id, carol.id), 403, "forbidden")
    assert_error(await remove_member(api, bob, chat_id, alice.id), 403, "forbidden")
    assert member_ids(await chat_view(api, alice, chat_id)) == sorted([alice.id, bob.id, carol.id])


async def test_removing_a_non_member_is_404(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    chat_id = await api.group(alice, [])
    assert_error(await remove_member(api, alice, chat_id, bob.id), 404, "not_found")
    assert_error(await remove_member(api, alice, chat_id, NO_SUCH_ID), 404, "not_found")


async def test_removed_member_can_be_added_back(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    chat_id = await api.group(alice, [bob])
    assert (await remove_member(api, alice, chat_id, bob.id)).status == 204
    assert (await add_member(api, alice, chat_id, bob.id)).status == 200
    assert (await get_chat(api, bob, chat_id)).status == 200
