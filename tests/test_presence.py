"""Presence: a user who shares a chat with you coming online or going offline (within 5 s of the
last device leaving; the test settings debounce offline by 0.2 s), and the online contacts a new
connection is told about. Users who share no chat learn nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support import Account, Api, WsClient


def about(user: Account, online: bool) -> dict[str, Any]:
    return {"type": "presence", "user_id": user.id, "online": online}


def presence_of(ws: WsClient, user: Account) -> list[bool]:
    return [f["online"] for f in ws.of_kind("presence") if f["user_id"] == user.id]


async def settled(ws: WsClient, chat_id: str) -> WsClient:
    """Wait until the node has attached this connection (presence registered, contacts told, the
    snapshot of online contacts sent): the user's actor handles its messages in order, so a
    message delivered to this device after its own send comes after the attachment. Without
    this a contact connecting meanwhile is reported twice (snapshot and transition)."""
    cmid = await ws.send_message(chat_id, "settle")
    await ws.next("message", where=lambda f: f["message"]["client_msg_id"] == cmid)
    return ws


async def next_about(
    ws: WsClient, user: Account, online: bool, within: float = 10.0
) -> dict[str, Any]:
    return await ws.next(
        "presence",
        timeout=within,
        where=lambda f: f["user_id"] == user.id and f["online"] is online,
    )


async def test_a_contact_coming_online_is_announced_once(api: Api) -> None:
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    wa = await settled(await api.ws(a), chat)
    await api.ws(b, "d1")
    assert await next_about(wa, b, True) == about(b, True)
    await api.ws(b, "d2")  # a second device is no transition
    await wa.quiet("presence", 0.5)
    assert presence_of(wa, b) == [True]


async def test_the_last_device_leaving_is_announced_offline_within_5s(api: Api) -> None:
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    wa = await settled(await api.ws(a), chat)
    b1, b2 = await api.ws(b, "d1"), await api.ws(b, "d2")
    await next_about(wa, b, True)
    await b1.close()
    await wa.quiet("presence", 0.6)  # b is still online on d2
    await b2.close()
    start = time.monotonic()
    assert await next_about(wa, b, False, within=6) == about(b, False)
    assert time.monotonic() - start < 5.0
    await wa.quiet("presence", 0.4)
    assert presence_of(wa, b) == [True, False]


async def test_online_again_after_offline(api: Api) -> None:
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    wa = await settled(await api.ws(a), chat)
    wb = await api.ws(b)
    await next_about(wa, b, True)
    await wb.close()
    await next_about(wa, b, False)
    await api.ws(b)
    await next_about(wa, b, True)
    assert presence_of(wa, b) == [True, False, True]


async def test_every_device_of_every_contact_is_told(api: Api) -> None:
    a, b, c = await api.account(), await api.account(), await api.account()
    chat = await api.group(a, [b, c])
    watchers = [
        await settled(await api.ws(u, d), chat) for u, d in ((a, "d1"), (a, "d2"), (c, "d1"))
    ]
    wb = await api.ws(b)
    for ws in watchers:
        await next_about(ws, b, True)
    await wb.close()
    for ws in watchers:
        await next_about(ws, b, False)


async def test_users_who_share_no_chat_get_no_presence(api: Api) -> None:
    a, b, stranger = await api.account(), await api.account(), await api.account()
    chat = await api.direct(a, b)
    ws_stranger = await api.ws(stranger)
    wa = await settled(await api.ws(a), chat)
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
    chats = {
        online_direct.id: await api.direct(b, online_direct),
        online_group.id: await api.group(online_group, [b, offline_contact]),
        stranger.id: await api.direct(stranger, await api.account()),
    }
    for user in (online_direct, online_group, stranger):
        await settled(await api.ws(user), chats[user.id])
    first = await api.ws(b, "d1")
    second = await api.ws(b, "d2")
    for ws in (first, second):
        frames = [await ws.next("presence") for _ in range(2)]
        assert sorted(frames, key=lambda f: f["user_id"]) == sorted(
            [about(online_direct, True), about(online_group, True)], key=lambda f: f["user_id"]
        )
    await second.quiet("presence", 0.4)  # not the stranger, not the offline one, not b itself
    assert len(second.of_kind("presence")) == 2


async def test_a_replaced_device_is_no_offline(api: Api) -> None:
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    wa = await settled(await api.ws(a), chat)
    old = await api.ws(b, "phone")
    await next_about(wa, b, True)
    await api.ws(b, "phone")
    await asyncio.wait_for(old.closed.wait(), 5)
    assert old.ws.close_code == 4001
    await wa.quiet("presence", 0.8)
    assert presence_of(wa, b) == [True]
