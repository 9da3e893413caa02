"""Chat activations (fencing-epoch bump and member read) batched across chats, on a real
PostgreSQL: many chats starting together cost one batch, and each gets exactly what the
one-chat statements (`ChatStore.take_ownership`, `ChatStore.members_joined`) would give."""

from __future__ import annotations

import asyncio
import uuid

from node.storage import Storage
from node.storage.activations import DuplicateActivation


async def _chats(storage: Storage, count: int) -> tuple[list[int], list[int]]:
    tag = uuid.uuid4().hex[:8]
    owner = await storage.users.create(f"act-o-{tag}", "hash")
    member = await storage.users.create(f"act-m-{tag}", "hash")
    chats = [
        (await storage.chats.create_group(owner.id, f"g{i}", [member.id] if i % 2 else [])).id
        for i in range(count)
    ]
    return chats, [owner.id, member.id]


async def test_many_chats_activated_at_once_take_one_batch(storage: Storage) -> None:
    chats, _ = await _chats(storage, 60)
    epochs = {
        c: await storage.pool.fetchval("SELECT epoch FROM chats WHERE id=$1", c) for c in chats
    }
    before = storage.activations.calls
    got = await asyncio.gather(
        *(storage.activations.activate(c) for c in chats), storage.activations.activate(-1)
    )
    assert storage.activations.calls - before == 1  # 61 without batching
    assert got[-1] is None  # no such chat
    for chat, activation in zip(chats, got, strict=False):
        assert activation is not None
        assert activation.epoch == epochs[chat] + 1  # bumped exactly once
        version, joined = await storage.chats.members_joined(chat)
        assert (activation.members_version, activation.joined) == (version, joined)
    # the new epoch fences the old one, as take_ownership's does
    assert await storage.chats.take_ownership(chats[0]) == epochs[chats[0]] + 2


async def test_one_chat_twice_in_a_batch_is_bumped_once(storage: Storage) -> None:
    (chat,), _ = await _chats(storage, 1)
    first, second = await asyncio.gather(
        storage.activations.activate(chat),
        storage.activations.activate(chat),
        return_exceptions=True,
    )
    assert not isinstance(first, BaseException) and first is not None
    assert isinstance(second, DuplicateActivation)
    assert await storage.pool.fetchval("SELECT epoch FROM chats WHERE id=$1", chat) == first.epoch
