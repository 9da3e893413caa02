"""The stores over a real, freshly migrated PostgreSQL database (one clone per test): the group
commit function `post_messages`, history reads, cursors, membership, tokens and users; and the
CursorWriter that batches cursor writes."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from node.storage import (
    ChatMissing,
    CursorStore,
    Fenced,
    NewMessage,
    Storage,
    UsernameTaken,
    create_pool,
)
from node.storage.cursor_writer import CursorWriter

WAIT = 5.0


async def user(storage: Storage, name: str | None = None) -> int:
    created = await storage.users.create(name or f"u{uuid.uuid4().hex[:10]}", "hash")
    return created.id


async def users(storage: Storage, n: int) -> list[int]:
    return [await user(storage) for _ in range(n)]


async def group(storage: Storage, owner: int, *members: int) -> tuple[int, int]:
    """A group chat and its current fencing epoch."""
    chat = await storage.chats.create_group(owner, "g", list(members))
    epoch = await storage.chats.take_ownership(chat.id)
    assert epoch is not None
    return chat.id, epoch


def msg(sender: int, cmid: str, text: str | None = None) -> NewMessage:
    return NewMessage(sender, cmid, text if text is not None else f"text {cmid}")


async def post(storage: Storage, chat: int, epoch: int, sender: int, *cmids: str) -> list[int]:
    """Post and return the seqs of what was created."""
    results = await storage.messages.post_batch(chat, epoch, [msg(sender, c) for c in cmids])
    assert all(r.status == "created" for r in results), results
    return [r.message.seq for r in results if r.message is not None]


async def last_seq(storage: Storage, chat: int) -> int:
    chat_row = await storage.chats.get(chat)
    assert chat_row is not None
    return chat_row.last_seq


async def message_count(storage: Storage) -> int:
    return int(await storage.pool.fetchval("SELECT count(*) FROM messages"))


async def joined_seq(storage: Storage, chat: int, user_id: int) -> int:
    return int(
        await storage.pool.fetchval(
            "SELECT joined_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat, user_id
        )
    )


# --- post_messages: the group commit ------------------------------------------------------------


async def test_seqs_are_gap_free_across_batches(storage: Storage) -> None:
    a, b, outsider = await users(storage, 3)
    chat, epoch = await group(storage, a, b)
    first = await storage.messages.post_batch(chat, epoch, [msg(a, "1"), msg(b, "2"), msg(a, "3")])
    assert [r.status for r in first] == ["created"] * 3
    assert [r.message.seq for r in first if r.message] == [1, 2, 3]
    # duplicates and refusals between created rows take no seq
    second = await storage.messages.post_batch(
        chat, epoch, [msg(a, "1"), msg(b, "4"), msg(outsider, "x"), msg(a, "5")]
    )
    assert [r.status for r in second] == ["duplicate", "created", "not_member", "created"]
    assert [r.message.seq if r.message else None for r in second] == [1, 4, None, 5]
    assert await last_seq(storage, chat) == 5
    rows = await storage.pool.fetch(
        "SELECT seq FROM messages WHERE chat_id = $1 ORDER BY seq", chat
    )
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]


async def test_created_message_fields_and_attachments(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat, epoch = await group(storage, a, b)
    attachment = {"media_id": "m1", "kind": "image"}
    [result] = await storage.messages.post_batch(
        chat, epoch, [NewMessage(a, "c1", "hello", (attachment,))]
    )
    m = result.message
    assert result.status == "created" and m is not None
    assert (m.chat_id, m.seq, m.sender_id, m.client_msg_id, m.text) == (chat, 1, a, "c1", "hello")
    assert m.attachments == (attachment,)
    assert result.members_version == 0
    [stored] = await storage.messages.page(chat, after_seq=None, before_seq=None, limit=10)
    assert stored == m


async def test_a_duplicate_returns_the_original_and_takes_no_seq(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat, epoch = await group(storage, a, b)
    [original] = await storage.messages.post_batch(chat, epoch, [msg(a, "c1", "first")])
    [again] = await storage.messages.post_batch(chat, epoch, [msg(a, "c1", "retry text")])
    assert again.status == "duplicate"
    assert again.message == original.message
    assert again.message is not None and again.message.text == "first"
    assert await last_seq(storage, chat) == 1
    assert await message_count(storage) == 1
    assert await post(storage, chat, epoch, a, "c2") == [2]


async def test_the_same_client_msg_id_in_another_chat_is_a_conflict(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat1, epoch1 = await group(storage, a, b)
    chat2, epoch2 = await group(storage, a, b)
    [original] = await storage.messages.post_batch(chat1, epoch1, [msg(a, "same")])
    [other] = await storage.messages.post_batch(chat2, epoch2, [msg(a, "same")])
    assert other.status == "conflict"
    assert other.message == original.message  # the message it collides with, in chat1
    assert await last_seq(storage, chat2) == 0
    # another sender may use the same client_msg_id freely
    [theirs] = await storage.messages.post_batch(chat2, epoch2, [msg(b, "same")])
    assert theirs.status == "created" and theirs.message is not None and theirs.message.seq == 1


async def test_a_non_member_is_refused_without_using_a_seq(storage: Storage) -> None:
    a, b, outsider = await users(storage, 3)
    chat, epoch = await group(storage, a, b)
    [refused] = await storage.messages.post_batch(chat, epoch, [msg(outsider, "x")])
    assert refused.status == "not_member" and refused.message is None
    assert await last_seq(storage, chat) == 0
    assert await message_count(storage) == 0
    assert await post(storage, chat, epoch, a, "y") == [1]


async def test_a_stale_epoch_is_fenced_and_writes_nothing(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat, old = await group(storage, a, b)
    await post(storage, chat, old, a, "1")
    new = await storage.chats.take_ownership(chat)
    assert new == old + 1
    with pytest.raises(Fenced):
        await storage.messages.post_batch(chat, old, [msg(a, "2"), msg(b, "3")])
    assert await last_seq(storage, chat) == 1
    assert await message_count(storage) == 1
    assert await post(storage, chat, new, a, "2") == [2]
    epochs = await storage.pool.fetch("SELECT seq, epoch FROM messages ORDER BY seq")
    assert [(r["seq"], r["epoch"]) for r in epochs] == [(1, old), (2, new)]


async def test_take_ownership_bumps_the_epoch(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat = await storage.chats.create_group(a, "g", [b])
    first = await storage.chats.take_ownership(chat.id)
    second = await storage.chats.take_ownership(chat.id)
    assert first is not None and second == first + 1
    assert await storage.chats.take_ownership(10**9) is None


async def test_posting_to_a_missing_chat(storage: Storage) -> None:
    a = await user(storage)
    with pytest.raises(ChatMissing):
        await storage.messages.post_batch(10**9, 1, [msg(a, "x")])


async def test_concurrent_writers_on_one_chat_get_unique_gap_free_seqs(
    storage: Storage, database_url: str
) -> None:
    """Two writers at the same epoch is a bug elsewhere; the row lock still keeps seqs sound."""
    a, b = await users(storage, 2)
    chat, epoch = await group(storage, a, b)
    pool = await create_pool(database_url, size=10)
    try:
        writers = Storage.over(pool)
        batches = [[msg(a if i % 2 else b, f"w{w}-{i}") for i in range(5)] for w in range(10)]
        async with asyncio.timeout(WAIT * 4):
            results = await asyncio.gather(
                *(writers.messages.post_batch(chat, epoch, batch) for batch in batches)
            )
    finally:
        await pool.close()
    seqs = [r.message.seq for batch in results for r in batch if r.message is not None]
    assert all(r.status == "created" for batch in results for r in batch)
    assert sorted(seqs) == list(range(1, 51))
    for batch in results:  # each batch is one transaction: a contiguous run, in input order
        batch_seqs = [r.message.seq for r in batch if r.message is not None]
        assert batch_seqs == list(range(batch_seqs[0], batch_seqs[0] + 5))
    assert await last_seq(storage, chat) == 50


async def test_concurrent_same_pair_into_two_chats_races_into_one_conflict(
    storage: Storage, database_url: str
) -> None:
    a, b = await users(storage, 2)
    chat1, epoch1 = await group(storage, a, b)
    chat2, epoch2 = await group(storage, a, b)
    pool = await create_pool(database_url, size=10)
    try:
        racers = Storage.over(pool)
        for i in range(10):
            one, two = await asyncio.gather(
                racers.messages.post_batch(chat1, epoch1, [msg(a, f"race-{i}")]),
                racers.messages.post_batch(chat2, epoch2, [msg(a, f"race-{i}")]),
            )
            assert sorted([one[0].status, two[0].status]) == ["conflict", "created"]
            assert one[0].message == two[0].message
    finally:
        await pool.close()
    assert await last_seq(storage, chat1) + await last_seq(storage, chat2) == 10


async def test_a_racing_insert_from_another_chat_ends_in_a_conflict(
    storage: Storage, database_url: str
) -> None:
    """Force the race: chat1's insert is held uncommitted while chat2 stores the same pair, so
    chat2's transaction meets the pair at the unique index (blocked on it), not at a lookup."""
    a, b = await users(storage, 2)
    chat1, epoch1 = await group(storage, a, b)
    chat2, epoch2 = await group(storage, a, b)
    holder = await asyncpg.connect(database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.fetch(
            "SELECT * FROM post_messages($1, $2, $3, $4, $5, $6)",
            chat1,
            epoch1,
            [a],
            ["held"],
            ["first"],
            ["[]"],
        )
        racer = asyncio.ensure_future(
            storage.messages.post_batch(chat2, epoch2, [msg(a, "held", "second")])
        )
        async with asyncio.timeout(WAIT):
            while not await storage.pool.fetchval(  # no event to await in another backend
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            ):
                assert not racer.done(), racer
                await asyncio.sleep(0.01)
        await tx.commit()
        async with asyncio.timeout(WAIT):
            [result] = await racer
    finally:
        await holder.close()
    assert result.status == "conflict"
    assert result.message is not None
    assert (result.message.chat_id, result.message.text) == (chat1, "first")
    assert await last_seq(storage, chat2) == 0


# --- reads ----------------------------------------------------------------------------------------


async def test_page_semantics(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat, epoch = await group(storage, a, b)
    await post(storage, chat, epoch, a, *[str(i) for i in range(1, 11)])
    other, other_epoch = await group(storage, a, b)
    await post(storage, other, other_epoch, b, "elsewhere")

    async def seqs(**kw: int | None) -> list[int]:
        args: dict[str, int | None] = {"after_seq": None, "before_seq": None, "limit": 50}
        args.update(kw)
        page = await storage.messages.page(chat, **args)  # type: ignore[arg-type]
        assert all(m.chat_id == chat for m in page)
        return [m.seq for m in page]

    assert await seqs() == list(range(1, 11))
    assert await seqs(limit=3) == [8, 9, 10]  # the newest, ascending
    assert await seqs(before_seq=8, limit=3) == [5, 6, 7]
    assert await seqs(before_seq=3, limit=5) == [1, 2]
    assert await seqs(after_seq=2, limit=3) == [3, 4, 5]  # the oldest above, ascending
    assert await seqs(after_seq=2, before_seq=5, limit=10) == [3, 4]
    assert await seqs(after_seq=10, limit=10) == []
    assert await seqs(after_seq=0, limit=2) == [1, 2]


async def test_between_and_ranges(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat1, e1 = await group(storage, a, b)
    chat2, e2 = await group(storage, a, b)
    await post(storage, chat1, e1, a, *[f"x{i}" for i in range(6)])
    await post(storage, chat2, e2, b, *[f"y{i}" for i in range(4)])
    assert [m.seq for m in await storage.messages.between(chat1, 2, 5, member=b)] == [3, 4, 5]
    assert await storage.messages.between(chat1, 6, 9, member=b) == []
    got = await storage.messages.ranges([(chat2, 1, 3), (chat1, 0, 2), (chat1, 4, 100)], member=b)
    assert [(m.chat_id, m.seq) for m in got] == sorted(
        [(chat2, 2), (chat2, 3), (chat1, 1), (chat1, 2), (chat1, 5), (chat1, 6)]
    )
    assert await storage.messages.ranges([], member=b) == []


async def test_positions(storage: Storage) -> None:
    a, b, c = await users(storage, 3)
    chat1, e1 = await group(storage, a, b)
    chat2, _ = await group(storage, a, b)
    await post(storage, chat1, e1, a, "1", "2", "3", "4")
    await storage.chats.add_member(chat1, c)  # joins at 4
    await post(storage, chat1, e1, a, "5", "6")
    await storage.cursors.save([(b, "phone", chat1, 5)])
    positions = {p.chat_id: p for p in await storage.messages.positions(b, "phone")}
    assert set(positions) == {chat1, chat2}
    assert (positions[chat1].joined_seq, positions[chat1].acked_seq) == (0, 5)
    assert positions[chat1].last_seq == 6
    assert (positions[chat2].acked_seq, positions[chat2].last_seq) == (0, 0)
    # another device of the same user has acked nothing
    [laptop] = [p for p in await storage.messages.positions(b, "laptop") if p.chat_id == chat1]
    assert laptop.acked_seq == 0
    # a late joiner starts at joined_seq, not at 0
    [late] = await storage.messages.positions(c, "phone")
    assert (late.chat_id, late.joined_seq, late.acked_seq, late.last_seq) == (chat1, 4, 4, 6)
    one = await storage.messages.position(c, "phone", chat1)
    assert one == late
    assert await storage.messages.position(c, "phone", chat2) is None


# --- cursors --------------------------------------------------------------------------------------


async def cursor(storage: Storage, user_id: int, device: str, chat: int) -> int | None:
    value = await storage.pool.fetchval(
        "SELECT acked_seq FROM device_cursors WHERE user_id = $1 AND device_id = $2"
        " AND chat_id = $3",
        user_id,
        device,
        chat,
    )
    return None if value is None else int(value)


async def test_cursor_save_never_moves_back_and_skips_foreign_chats(storage: Storage) -> None:
    a, b, outsider = await users(storage, 3)
    chat, _ = await group(storage, a, b)
    await storage.cursors.save([(a, "d1", chat, 5), (b, "d1", chat, 2)])
    await storage.cursors.save([(a, "d1", chat, 3), (b, "d1", chat, 7), (outsider, "d1", chat, 9)])
    assert await cursor(storage, a, "d1", chat) == 5
    assert await cursor(storage, b, "d1", chat) == 7
    assert await cursor(storage, outsider, "d1", chat) is None
    await storage.cursors.save([])  # nothing to do, no error


async def test_touch_device_bumps_its_epoch(storage: Storage) -> None:
    a = await user(storage)
    assert await storage.cursors.touch_device(a, "d1") == 1
    assert await storage.cursors.touch_device(a, "d1") == 2
    assert await storage.cursors.touch_device(a, "d2") == 1


# --- membership --------------------------------------------------------------------------------


async def test_add_member_joins_at_last_seq_and_bumps_members_version(storage: Storage) -> None:
    a, b, c = await users(storage, 3)
    chat, epoch = await group(storage, a, b)
    version, members = await storage.chats.members(chat)
    assert sorted(members) == sorted([a, b])
    await post(storage, chat, epoch, a, "1", "2", "3")
    assert await storage.chats.add_member(chat, c) is True
    assert await joined_seq(storage, chat, c) == 3
    new_version, members = await storage.chats.members(chat)
    assert new_version == version + 1 and c in members
    assert await storage.chats.add_member(chat, c) is False
    assert (await storage.chats.members(chat))[0] == new_version
    [result] = await storage.messages.post_batch(chat, epoch, [msg(c, "4")])
    assert result.status == "created" and result.members_version == new_version
    assert await storage.chats.is_member(chat, c)


async def test_remove_member_hands_the_group_to_the_longest_standing_member(
    storage: Storage,
) -> None:
    owner, early_id, late_id = await users(storage, 3)
    # the longest-standing member has the *higher* id, so id order cannot pass for join order
    chat = await storage.chats.create_group(owner, "g", [])
    assert await storage.chats.add_member(chat.id, late_id)
    assert await storage.chats.add_member(chat.id, early_id)
    await storage.cursors.save([(owner, "d", chat.id, 0)])
    version, _ = await storage.chats.members(chat.id)
    assert await storage.chats.remove_member(chat.id, early_id) is True
    still = await storage.chats.get(chat.id)
    assert still is not None and still.owner_id == owner  # a member leaving changes nothing
    assert await storage.chats.remove_member(chat.id, owner) is True
    after = await storage.chats.get(chat.id)
    assert after is not None and after.owner_id == late_id
    assert await cursor(storage, owner, "d", chat.id) is None  # their cursors went with them
    assert (await storage.chats.members(chat.id)) == (version + 2, [late_id])
    assert await storage.chats.remove_member(chat.id, owner) is False
    assert (await storage.chats.members(chat.id))[0] == version + 2


async def test_removing_another_member_keeps_the_owner(storage: Storage) -> None:
    """The owner is not always the longest-standing member: members created with the group share
    its joined_at, and the tie goes to the lower user id."""
    first_id, owner, other = await users(storage, 3)
    chat = await storage.chats.create_group(owner, "g", [first_id, other])
    assert await storage.chats.remove_member(chat.id, other) is True
    after = await storage.chats.get(chat.id)
    assert after is not None and after.owner_id == owner


async def test_concurrent_direct_chat_creation_makes_one_chat(
    storage: Storage, database_url: str
) -> None:
    a, b = await users(storage, 2)
    pool = await create_pool(database_url, size=8)
    try:
        racers = Storage.over(pool)
        results = await asyncio.gather(
            *(racers.chats.create_direct(*((a, b) if i % 2 else (b, a))) for i in range(8))
        )
    finally:
        await pool.close()
    assert len({chat.id for chat, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_presence_watchers_share_a_chat_up_to_the_limit(storage: Storage) -> None:
    a, b, c, d, e = await users(storage, 5)
    await storage.chats.create_direct(a, b)
    await storage.chats.create_group(a, "small", [c])  # 2 members
    await storage.chats.create_group(c, "big", [a, d, e])  # 4 members
    pairs = await storage.chats.presence_watchers([a, c, e], 3)
    assert sorted(pairs) == sorted([(a, b), (a, c), (c, a)])  # not through "big"
    assert sorted(await storage.chats.presence_watchers([e], 4)) == sorted([(e, a), (e, c), (e, d)])
    assert await storage.chats.presence_watchers([], 3) == []
    assert sorted(await storage.chats.sharing_a_chat(a, [b, d, e, a, 10**12])) == sorted([b, d, e])


async def test_create_direct_is_idempotent(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat, created = await storage.chats.create_direct(a, b)
    again, created_again = await storage.chats.create_direct(b, a)
    assert created and not created_again and again.id == chat.id
    assert sorted((await storage.chats.members(chat.id))[1]) == sorted([a, b])


async def test_mark_read_never_lowers_and_stops_at_last_seq(storage: Storage) -> None:
    a, b, outsider = await users(storage, 3)
    chat, epoch = await group(storage, a, b)
    await post(storage, chat, epoch, a, "1", "2", "3", "4", "5")
    assert await storage.chats.mark_read(chat, b, 4) == 4
    assert await storage.chats.mark_read(chat, b, 2) == 4
    assert await storage.chats.mark_read(chat, b, 6) is None
    assert await storage.chats.mark_read(chat, outsider, 1) is None
    view = await storage.chats.view(chat, b, with_members=False)
    assert view is not None and view.read_seq == 4
    assert view.unread_count == 1
    assert await storage.chats.mark_read(chat, b, 5) == 5


# --- users and tokens ----------------------------------------------------------------------------


async def test_usernames_are_unique_regardless_of_case(storage: Storage) -> None:
    await storage.users.create("Alice", "h")
    with pytest.raises(UsernameTaken):
        await storage.users.create("alice", "h")
    with pytest.raises(UsernameTaken):
        await storage.users.create("ALICE", "h")
    found = await storage.users.credentials("aLiCe")
    assert found is not None and found[0].username == "Alice" and found[1] == "h"


async def test_user_search_escapes_like_wildcards(storage: Storage) -> None:
    for name in ("a_b", "axb", "a%c", "abc", "A_Bee", "a\\d"):
        await storage.users.create(name, "h")

    async def names(prefix: str, limit: int = 10) -> list[str]:
        return [u.username for u in await storage.users.search(prefix, limit)]

    assert await names("a_") == ["a_b", "A_Bee"]
    assert await names("a%") == ["a%c"]
    assert await names("a\\") == ["a\\d"]
    assert await names("AB") == ["abc"]
    assert len(await names("a", limit=2)) == 2


async def test_refresh_token_rotation_and_reuse_revokes_the_family(storage: Storage) -> None:
    a = await user(storage)
    family = uuid.uuid4()
    later = datetime.now(UTC) + timedelta(days=1)

    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    await storage.tokens.issue(a, family, digest("t1"), later)
    spent = await storage.tokens.spend(digest("t1"))
    assert spent is not None and (spent.user_id, spent.family_id) == (a, family)
    await storage.tokens.issue(a, family, digest("t2"), later)
    assert await storage.tokens.spend(digest("t1")) is None  # reuse of a spent token...
    assert await storage.tokens.spend(digest("t2")) is None  # ...revoked its whole family
    # other families are untouched; unknown and expired tokens are refused
    other = uuid.uuid4()
    await storage.tokens.issue(a, other, digest("o1"), later)
    await storage.tokens.issue(a, other, digest("old"), datetime.now(UTC) - timedelta(seconds=1))
    assert await storage.tokens.spend(digest("unknown")) is None
    assert await storage.tokens.spend(digest("old")) is None
    assert await storage.tokens.spend(digest("o1")) is not None


async def test_revoke_family_of_checks_the_owner(storage: Storage) -> None:
    a, b = await users(storage, 2)
    later = datetime.now(UTC) + timedelta(days=1)
    await storage.tokens.issue(a, uuid.uuid4(), b"tok-a", later)
    assert await storage.tokens.revoke_family_of(b"tok-a", b) is False
    assert await storage.tokens.revoke_family_of(b"tok-a", a) is True
    assert await storage.tokens.spend(b"tok-a") is None


# --- CursorWriter ------------------------------------------------------------------------------


class Relay:
    """Our own seam over real CursorStores: each save goes to the next store in `stores` (the
    last one repeats), and `saved` is set after every attempt."""

    def __init__(self, *stores: CursorStore) -> None:
        self.stores = list(stores)
        self.attempts = 0
        self.saved = asyncio.Event()

    async def save(self, cursors: Sequence[tuple[int, str, int, int]]) -> None:
        store = self.stores[min(self.attempts, len(self.stores) - 1)]
        self.attempts += 1
        try:
            await store.save(cursors)
        finally:
            self.saved.set()


async def closed_store(database_url: str) -> CursorStore:
    pool = await create_pool(database_url, size=2)
    await pool.close()
    return CursorStore(pool)


async def test_marks_coalesce_to_the_highest_and_flush_persists(storage: Storage) -> None:
    a, b = await users(storage, 2)
    chat, _ = await group(storage, a, b)
    writer = CursorWriter(storage.cursors, interval=0.05)
    for seq in (5, 3, 9, 7):
        writer.mark(a, "d1", chat, seq)
    writer.mark(a, "d2", chat, 1)
    assert writer.pending == 2
    await writer.flush()
    assert writer.pending == 0 and writer.flushed == 2
    assert await cursor(storage, a, "d1", chat) == 9
    assert await cursor(storage, a, "d2", chat) == 1
    writer.mark(a, "d1", chat, 4)  # lower than stored: the store keeps 9
    await writer.flush()
    assert await cursor(storage, a, "d1", chat) == 9
    await writer.flush()  # nothing pending: no write
    assert writer.flushed == 3


async def test_a_failed_flush_keeps_the_marks(storage: Storage, database_url: str) -> None:
    a, b = await users(storage, 2)
    chat, _ = await group(storage, a, b)
    relay = Relay(await closed_store(database_url), storage.cursors)
    writer = CursorWriter(relay, interval=0.05)  # type: ignore[arg-type]
    writer.mark(a, "d1", chat, 4)
    with pytest.raises(asyncpg.InterfaceError):
        await writer.flush()
    assert writer.pending == 1 and writer.flushed == 0
    writer.mark(a, "d1", chat, 3)  # lower than the kept mark: no effect
    writer.mark(b, "d1", chat, 2)
    await writer.flush()
    assert writer.pending == 0 and writer.flushed == 2
    assert await cursor(storage, a, "d1", chat) == 4
    assert await cursor(storage, b, "d1", chat) == 2


async def test_run_flushes_within_its_interval_and_retries_failures(
    storage: Storage, database_url: str
) -> None:
    a, b = await users(storage, 2)
    chat, _ = await group(storage, a, b)
    interval = 0.05
    relay = Relay(await closed_store(database_url), storage.cursors)
    writer = CursorWriter(relay, interval=interval)  # type: ignore[arg-type]
    runner = asyncio.ensure_future(writer.run())
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        writer.mark(a, "d1", chat, 6)
        async with asyncio.timeout(WAIT):
            await relay.saved.wait()  # the first attempt: the closed pool fails
        assert relay.attempts == 1 and writer.pending == 1
        relay.saved.clear()
        async with asyncio.timeout(WAIT):
            await relay.saved.wait()  # retried at the next tick without a new mark
        elapsed = loop.time() - started
        assert relay.attempts == 2 and writer.pending == 0
        assert await cursor(storage, a, "d1", chat) == 6
        assert 2 * interval <= elapsed < 2 * interval + 1.0
        relay.saved.clear()
        started = loop.time()
        writer.mark(b, "d1", chat, 1)
        async with asyncio.timeout(WAIT):
            await relay.saved.wait()
        assert interval <= loop.time() - started < interval + 0.5
        assert await cursor(storage, b, "d1", chat) == 1
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
