"""Presence: a user who shares a chat with you coming online or going offline (within 5 s of the
last device leaving; the test settings debounce offline by 0.2 s and batch changes every 0.2 s),
and the online contacts a new connection is told about, in one frame. Users who share no chat
learn nothing; members of chats above MESSENGER_PRESENCE_GROUP_LIMIT learn each other's presence
only by asking (`presence_query`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support import Account, Api, WsClient


def about(user: Account, online: bool) -> list[dict[str, Any]]:
    """What a presence frame about this one change holds (see `entries`)."""
    return [{"user_id": user.id, "online": online}]


# users who came online only to mark a connection attached (see `settled`): left out of what the
# tests look at, since they may be heard of twice. Per test: ids start over with each database.
WITNESSES: set[str] = set()


@pytest.fixture(autouse=True)
def _no_witnesses_yet() -> None:
    WITNESSES.clear()


def _all_entries(frame: dict[str, Any]) -> list[dict[str, Any]]:
    if "users" in frame:
        assert set(frame) == {"type", "users"}, frame
        return list(frame["users"])
    return [{"user_id": frame["user_id"], "online": frame["online"]}]


def entries(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """The (user_id, online) entries of a presence frame, whichever its shape (witnesses left
    out)."""
    return [e for e in _all_entries(frame) if e["user_id"] not in WITNESSES]


def heard(ws: WsClient) -> list[dict[str, Any]]:
    """The presence frames this connection got about users under test."""
    return [f for f in ws.of_kind("presence") if entries(f)]


async def hears_nothing(ws: WsClient, within: float) -> None:
    await ws.quiet("presence", within, where=lambda f: bool(entries(f)))


def presence_of(ws: WsClient, user: Account) -> list[bool]:
    return [
        e["online"] for f in ws.of_kind("presence") for e in entries(f) if e["user_id"] == user.id
    ]


def announces(user: Account, online: bool) -> Any:
    return lambda f: {"user_id": user.id, "online": online} in _all_entries(f)


async def settled(api: Api, ws: WsClient, who: Account) -> WsClient:
    """Wait until the node has attached this connection of `who` (presence registered, contacts
    told, the snapshot of online contacts written). Without this a contact connecting meanwhile
    is heard of twice (in the snapshot and in the next batch).

    Messages reach a device straight from delivery, not through the user's actor, so they mark
    nothing; a presence frame does, since the actor writes it after the attachment. So a witness
    (a fresh user sharing a chat with `who`) comes online, and we wait to hear of it: from the
    snapshot or from the next batch, both written after the attachment."""
    witness = await api.account()
    WITNESSES.add(witness.id)
    await api.direct(who, witness)
    await api.ws(witness)
    await ws.next("presence", where=announces(witness, True))
    return ws


async def next_about(
    ws: WsClient, user: Account, online: bool, within: float = 10.0
) -> dict[str, Any]:
    return await ws.next("presence", timeout=within, where=announces(user, online))


async def test_a_contact_coming_online_is_announced_once(api: Api) -> None:
    a, b = await api.account(), await api.account()
    await api.direct(a, b)
    wa = await settled(api, await api.ws(a), a)
    await api.ws(b, "d1")
    assert entries(await next_about(wa, b, True)) == about(b, True)
    await api.ws(b, "d2")  # a second device is no transition
    await hears_nothing(wa, 0.5)
    assert presence_of(wa, b) == [True]


async def test_the_last_device_leaving_is_announced_offline_within_5s(api: Api) -> None:
    a, b = await api.account(), await api.account()
    await api.direct(a, b)
    wa = await settled(api, await api.ws(a), a)
    b1, b2 = await api.ws(b, "d1"), await api.ws(b, "d2")
    await next_about(wa, b, True)
    await b1.close()
    await hears_nothing(wa, 0.6)  # b is still online on d2
    await b2.close()
    start = time.monotonic()
    assert entries(await next_about(wa, b, False, within=6)) == about(b, False)
    assert time.monotonic() - start < 5.0
    await hears_nothing(wa, 0.4)
    assert presence_of(wa, b) == [True, False]


async def test_online_again_after_offline(api: Api) -> None:
    a, b = await api.account(), await api.account()
    await api.direct(a, b)
    wa = await settled(api, await api.ws(a), a)
    wb = await api.ws(b)
    await next_about(wa, b, True)
    await wb.close()
    await next_about(wa, b, False)
    await api.ws(b)
    await next_about(wa, b, True)
    assert presence_of(wa, b) == [True, False, True]


async def test_every_device_of_every_contact_is_told(api: Api) -> None:
    a, b, c = await api.account(), await api.account(), await api.account()
    await api.group(a, [b, c])
    watchers = [
        await settled(api, await api.ws(u, d), u) for u, d in ((a, "d1"), (a, "d2"), (c, "d1"))
    ]
    wb = await api.ws(b)
    for ws in watchers:
        await next_about(ws, b, True)
    await wb.close()
    for ws in watchers:
        await next_about(ws, b, False)


async def test_users_who_share_no_chat_get_no_presence(api: Api) -> None:
    a, b, stranger = await api.account(), await api.account(), await api.account()
    await api.direct(a, b)
    ws_stranger = await api.ws(stranger)
    wa = await settled(api, await api.ws(a), a)
    wb = await api.ws(b)
    await next_about(wa, b, True)
    await wb.close()
    await next_about(wa, b, False)  # both transitions happened...
    await ws_stranger.quiet("presence", 0.3)  # ...and the stranger heard of neither
    assert ws_stranger.of_kind("presence") == []
    await wa.close()
    await ws_stranger.quiet("presence", 0.6)


async def test_a_new_connection_is_told_which_contacts_are_online(api: Api) -> None:
    b = await api.account()
    online_direct, online_group, offline_contact, stranger = (
        await api.account(),
        await api.account(),
        await api.account(),
        await api.account(),
    )
    await api.direct(b, online_direct)
    await api.group(online_group, [b, offline_contact])
    await api.direct(stranger, await api.account())
    for user in (online_direct, online_group, stranger):
        await settled(api, await api.ws(user), user)
    # their own arrival goes out with the next batch (within 0.2 s): b's connections must
    # come after it, or they hear of it twice (snapshot and batch); nothing to await for it
    await asyncio.sleep(0.6)
    first = await api.ws(b, "d1")
    second = await api.ws(b, "d2")
    for ws in (first, second):
        snapshot = await ws.next("presence")  # one frame for all online contacts
        assert snapshot["type"] == "presence"
        assert sorted(snapshot["users"], key=lambda e: e["user_id"]) == sorted(
            [
                {"user_id": online_direct.id, "online": True},
                {"user_id": online_group.id, "online": True},
            ],
            key=lambda e: e["user_id"],
        )
    await second.quiet("presence", 0.6)  # not the stranger, not the offline one, not b itself
    assert len(second.of_kind("presence")) == 1


async def test_a_replaced_device_is_no_offline(api: Api) -> None:
    a, b = await api.account(), await api.account()
    await api.direct(a, b)
    wa = await settled(api, await api.ws(a), a)
    old = await api.ws(b, "phone")
    await next_about(wa, b, True)
    await api.ws(b, "phone")
    await asyncio.wait_for(old.closed.wait(), 5)
    assert old.ws.close_code == 4001
    await hears_nothing(wa, 0.8)
    assert presence_of(wa, b) == [True]


async def test_contacts_changing_within_one_interval_come_in_one_frame(node_api: Any) -> None:
    _, api = await node_api(presence_interval=2.0)
    a, b, c, d, x, y, z = [await api.account() for _ in range(7)]
    await api.group(a, [b, c, d, x, y, z])  # 7 members: small enough for presence
    wa = await settled(api, await api.ws(a), a)
    await api.ws(x)
    await next_about(wa, x, True)  # a batch just went out: the next is ~2 s away
    for user in (b, c, d):
        await api.ws(user)
    batch = await next_about(wa, b, True)
    assert sorted(entries(batch), key=lambda e: e["user_id"]) == sorted(
        [{"user_id": u.id, "online": True} for u in (b, c, d)], key=lambda e: e["user_id"]
    )
    # online and offline again within one interval: the next batch says y is offline (a
    # watcher's snapshot may have shown it online meanwhile), in the same frame as z
    wy = await api.ws(y)
    await wy.close()
    await asyncio.sleep(0.4)  # past the offline grace (0.2 s), well within the interval
    await api.ws(z)
    batch = await next_about(wa, z, True)
    assert sorted(entries(batch), key=lambda e: e["user_id"]) == sorted(
        [{"user_id": y.id, "online": False}, {"user_id": z.id, "online": True}],
        key=lambda e: e["user_id"],
    )
    assert presence_of(wa, y) == [False]
    assert len(heard(wa)) == 3  # at most one frame per interval
    await api.ws(x, "d2")  # no transition
    await hears_nothing(wa, 2.5)


async def test_members_of_a_big_group_are_told_presence_only_on_request(node_api: Any) -> None:
    _, api = await node_api(presence_group_limit=3)
    a, b, c, d, stranger = [await api.account() for _ in range(5)]
    await api.group(a, [b, c, d])  # 4 members, above the limit
    await api.direct(a, d)  # a and d also share a small chat
    wa = await settled(api, await api.ws(a), a)
    wb = await api.ws(b)
    await api.ws(c)
    await api.ws(d)
    assert entries(await next_about(wa, d, True)) == about(d, True)
    await hears_nothing(wa, 0.6)
    assert presence_of(wa, b) == presence_of(wa, c) == []
    assert wb.of_kind("presence") == []  # b's snapshot is empty too: no frame

    ids = [b.id, stranger.id, c.id, d.id, b.id]
    await wa.send({"type": "presence_query", "user_ids": ids})
    answer = await wa.next("presence", where=lambda f: "users" in f and len(f["users"]) == 4)
    assert answer == {
        "type": "presence",
        "users": [
            {"user_id": b.id, "online": True},
            {"user_id": stranger.id, "online": False},  # shares no chat: reported offline
            {"user_id": c.id, "online": True},
            {"user_id": d.id, "online": True},
        ],
    }
    await wb.close()
    await hears_nothing(wa, 0.8)  # b's offline is not pushed either...
    await wa.send({"type": "presence_query", "user_ids": [b.id]})
    answer = await wa.next(
        "presence", where=lambda f: f.get("users", [{}])[0].get("user_id") == b.id
    )
    assert answer == {"type": "presence", "users": [{"user_id": b.id, "online": False}]}


async def test_presence_query_is_validated(api: Api) -> None:
    a = await api.account()
    ws = await api.ws(a)
    for user_ids in ([], [str(n) for n in range(1, 202)]):
        await ws.send({"type": "presence_query", "user_ids": user_ids})
        error = await ws.next("error")
        assert error["code"] == "validation_error", error
    await ws.send({"type": "presence_query", "user_ids": "1"})
    assert (await ws.next("error"))["code"] == "invalid_frame"
    await ws.send({"type": "presence_query", "user_ids": [str(n) for n in range(1, 201)]})
    answer = await ws.next("presence")
    assert len(answer["users"]) == 200
    assert not any(e["online"] for e in answer["users"])
