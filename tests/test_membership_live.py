"""Membership is exact on live sockets: a device receives only the messages posted while its user
was a member, on a socket that stayed open through a removal and a re-add as after a reconnect;
on one node and with the member's socket on another node than the chat."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import Account, Api, WsClient


async def remove(api: Api, owner: Account, chat: str, member: Account) -> None:
    r = await api.call("DELETE", f"/api/v1/chats/{chat}/members/{member.id}", owner.token)
    assert r.status == 204, r


async def add(api: Api, owner: Account, chat: str, member: Account) -> None:
    r = await api.call(
        "POST", f"/api/v1/chats/{chat}/members", owner.token, json={"user_id": member.id}
    )
    assert r.status == 200, r


async def sent(api: Api, who: Account, chat: str, text: str) -> int:
    r = await api.send(who, chat, text)
    assert r.status == 201, r
    return int(r.body["seq"])


async def apis(node_api: Callable[..., Any], nodes: int) -> tuple[Api, Api]:
    """(the owner's node, the member's node): the same node, or two nodes of one cluster."""
    _, first = await node_api()
    if nodes == 1:
        return first, first
    _, second = await node_api()
    return first, second


def seqs(ws: WsClient, chat: str) -> list[int]:
    return [f["message"]["seq"] for f in ws.of_kind("message") if f["message"]["chat_id"] == chat]


@pytest.mark.parametrize("nodes", [1, 2], ids=["one_node", "two_nodes"])
async def test_removed_and_readded_member_gets_nothing_from_while_out(
    node_api: Callable[..., Any], nodes: int
) -> None:
    owner_api, member_api = await apis(node_api, nodes)
    owner, member = await owner_api.account(), await owner_api.account()
    chat = await owner_api.group(owner, [member])
    ws = await member_api.ws(member, "phone")

    assert await sent(owner_api, owner, chat, "before") == 1
    assert [m["seq"] for m in await ws.messages(1, chat)] == [1]

    await remove(owner_api, owner, chat, member)
    assert await sent(owner_api, owner, chat, "while out 1") == 2
    assert await sent(owner_api, owner, chat, "while out 2") == 3
    await add(owner_api, owner, chat, member)
    assert await sent(owner_api, owner, chat, "after re-add") == 4

    back = await ws.messages(1, chat)
    assert back[0]["seq"] == 4, back
    assert seqs(ws, chat) == [1, 4]
    await ws.ack(chat, 4)

    # a device connecting now for the first time starts where the user (last) joined
    fresh = await member_api.ws(member, "laptop")
    assert await sent(owner_api, owner, chat, "to both") == 5
    assert [m["seq"] for m in await fresh.messages(2, chat)] == [4, 5]
    assert seqs(fresh, chat) == [4, 5]
    assert [m["seq"] for m in await ws.messages(1, chat)] == [5]
    assert seqs(ws, chat) == [1, 4, 5]


@pytest.mark.parametrize("nodes", [1, 2], ids=["one_node", "two_nodes"])
async def test_member_removed_while_connected_gets_nothing_more(
    node_api: Callable[..., Any], nodes: int
) -> None:
    owner_api, member_api = await apis(node_api, nodes)
    owner, member, other = (
        await owner_api.account(),
        await owner_api.account(),
        await owner_api.account(),
    )
    chat = await owner_api.group(owner, [member, other])
    ws = await member_api.ws(member, "phone")
    witness = await owner_api.ws(other, "phone")

    assert await sent(owner_api, owner, chat, "before") == 1
    assert [m["seq"] for m in await ws.messages(1, chat)] == [1]
    await remove(owner_api, owner, chat, member)
    for n in range(2, 5):
        assert await sent(owner_api, owner, chat, f"after {n}") == n
    # the witness got everything; by then the removed member's socket would have too
    assert [m["seq"] for m in await witness.messages(4, chat)] == [1, 2, 3, 4]
    await ws.quiet("message", within=0.5)
    assert seqs(ws, chat) == [1]

    # a reconnect shows nothing of it either
    again = await member_api.ws(member, "phone")
    await again.quiet("message", within=0.5)
    assert seqs(again, chat) == []


async def test_a_long_absence_is_not_announced_as_a_gap(node_api: Callable[..., Any]) -> None:
    """More was posted while the member was out than a backlog holds: still none of it is
    theirs, so no `gap` frame points at it either."""
    _, api = await node_api(backlog_limit=2)
    owner, member = await api.account(), await api.account()
    chat = await api.group(owner, [member])
    ws = await api.ws(member, "phone")
    assert await sent(api, owner, chat, "before") == 1
    await ws.messages(1, chat)
    await remove(api, owner, chat, member)
    for n in range(5):
        await sent(api, owner, chat, f"while out {n}")
    await add(api, owner, chat, member)
    assert await sent(api, owner, chat, "back") == 7
    assert [m["seq"] for m in await ws.messages(1, chat)] == [7]
    assert ws.of_kind("gap") == []
