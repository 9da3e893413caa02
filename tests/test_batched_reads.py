"""`BatchedReads` over a real PostgreSQL: each read answers exactly as its one-device counterpart,
many devices asking at once are served by one statement per read, and a request PostgreSQL
refuses fails alone."""

from __future__ import annotations

import asyncio

import pytest

from node.storage import Storage
from node.storage.batched_reads import BatchedReads
from tests.test_storage import group, post, user, users


async def test_many_devices_at_once_cost_one_statement_per_read(storage: Storage) -> None:
    owner = await user(storage)
    members = await users(storage, 60)
    chat, epoch = await group(storage, owner, *members)
    await post(storage, chat, epoch, owner, *(f"m{i}" for i in range(12)))
    reads = BatchedReads(storage.pool, max_batch=500)
    devices = [(m, f"d{k}") for m in members for k in range(2)]  # 120 devices

    exists = await asyncio.gather(*(reads.user_exists(u) for u, _ in devices))
    epochs = await asyncio.gather(*(reads.touch_device(u, d) for u, d in devices))
    positions = await asyncio.gather(*(reads.positions(u, d) for u, d in devices))
    ranges = await asyncio.gather(*(reads.ranges([(chat, 2, 12)], member=u) for u, _ in devices))

    assert exists == [True] * 120 and epochs == [1] * 120
    assert all(
        [(p.chat_id, p.acked_seq, p.last_seq) for p in ps] == [(chat, 0, 12)] for ps in positions
    )
    assert all([m.seq for m in got] == list(range(3, 13)) for got in ranges)
    assert [b.calls for b in reads.batchers] == [1, 1, 1, 1]  # 4 statements for 480 reads
    await reads.aclose()


async def test_each_read_answers_as_the_one_device_read(storage: Storage) -> None:
    a, b, c, stranger = await users(storage, 4)
    chat1, e1 = await group(storage, a, b, c)
    chat2, e2 = await group(storage, b, c)
    await post(storage, chat1, e1, a, *(f"x{i}" for i in range(6)))
    await post(storage, chat2, e2, b, *(f"y{i}" for i in range(4)))
    await storage.cursors.save([(b, "phone", chat1, 4), (c, "tab", chat2, 1)])
    # c leaves chat1 and comes back: nothing from before (last) joining
    assert await storage.chats.remove_member(chat1, c)
    await post(storage, chat1, e1, a, "z0", "z1")
    assert await storage.chats.add_member(chat1, c)
    await post(storage, chat1, e1, a, "z2")
    reads = BatchedReads(storage.pool)

    devices = [(a, "d"), (b, "phone"), (b, "other"), (c, "tab"), (stranger, "s")]
    batched = await asyncio.gather(*(reads.positions(u, d) for u, d in devices))
    for (u, d), got in zip(devices, batched, strict=True):
        single = await storage.messages.positions(u, d)
        assert sorted(got, key=lambda p: p.chat_id) == sorted(single, key=lambda p: p.chat_id)
    assert batched[-1] == []

    wanted = [(chat1, 0, 9), (chat2, 0, 4)]
    members = [a, b, c, stranger]
    batched_ranges = await asyncio.gather(*(reads.ranges(wanted, member=u) for u in members))
    for u, got in zip(members, batched_ranges, strict=True):
        assert got == await storage.messages.ranges(wanted, member=u)
    assert [m.seq for m in batched_ranges[2] if m.chat_id == chat1] == [9]  # c: after rejoining
    assert batched_ranges[3] == []  # not a member: nothing

    assert await asyncio.gather(reads.user_exists(a), reads.user_exists(10**12)) == [True, False]
    await reads.aclose()


async def test_one_device_twice_in_a_batch_gets_two_epochs_the_later_one_newer(
    storage: Storage,
) -> None:
    a, b = await users(storage, 2)
    assert await storage.cursors.touch_device(a, "d") == 1
    reads = BatchedReads(storage.pool)
    got = await asyncio.gather(
        reads.touch_device(a, "d"), reads.touch_device(b, "d"), reads.touch_device(a, "d")
    )
    assert got == [2, 1, 3]
    assert await storage.cursors.touch_device(a, "d") == 4  # the row holds the newest
    await reads.aclose()


async def test_a_request_postgresql_refuses_fails_alone(storage: Storage) -> None:
    members = await users(storage, 20)
    reads = BatchedReads(storage.pool)
    # a NUL character in text: PostgreSQL refuses it (data error), the batch is split
    devices = [(m, "bad\x00" if i == 7 else f"d{i}") for i, m in enumerate(members)]
    results = await asyncio.gather(
        *(reads.touch_device(u, d) for u, d in devices), return_exceptions=True
    )
    assert isinstance(results[7], Exception)
    assert [r for i, r in enumerate(results) if i != 7] == [1] * 19
    touch = reads.batchers[1]
    assert 2 < touch.calls <= 2 * 5 + 1  # halving down to the culprit, not one call per device
    await reads.aclose()


async def test_a_closed_pool_fails_the_batch_once(storage: Storage, database_url: str) -> None:
    from node.storage import create_pool

    pool = await create_pool(database_url, size=2)
    reads = BatchedReads(pool)
    await pool.close()
    results = await asyncio.gather(
        *(reads.positions(1, f"d{i}") for i in range(30)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
    assert reads.batchers[2].calls == 1  # the pool is unusable: no split, no retries per device
    await reads.aclose()


@pytest.mark.parametrize("parallel", [1, 3])
async def test_storm_of_requests_is_served_in_few_statements(
    storage: Storage, parallel: int
) -> None:
    members = await users(storage, 50)
    reads = BatchedReads(storage.pool, max_batch=20, parallel=parallel)
    got = await asyncio.gather(*(reads.positions(m, "d") for m in members * 10))
    assert len(got) == 500 and all(p == [] for p in got)
    assert reads.batchers[2].calls == 25  # 500 requests / max_batch 20
    await reads.aclose()


async def test_positions_count_acks_not_yet_flushed(storage: Storage) -> None:
    from node.storage.cursor_writer import CursorWriter

    a, b = await users(storage, 2)
    chat1, e1 = await group(storage, a, b)
    chat2, e2 = await group(storage, a, b)
    await post(storage, chat1, e1, a, *(f"x{i}" for i in range(5)))
    await post(storage, chat2, e2, a, *(f"y{i}" for i in range(5)))
    writer = CursorWriter(storage.cursors, interval=0.05)
    assert writer.unsaved(b, "d", [chat1, chat2]) == {}
    writer.mark(b, "d", chat1, 3)
    writer.mark(b, "other", chat2, 4)  # another device's ack: not this one's
    writer.mark(a, "d", chat2, 5)  # another user's
    assert writer.unsaved(b, "d", [chat1, chat2]) == {chat1: 3}
    await writer.flush()
    assert writer.unsaved(b, "d", [chat1, chat2]) == {}
    assert await storage.cursors.touch_device(b, "d") == 1
