"""Chats and their members.

Membership changes lock the chat row (`FOR NO KEY UPDATE`, like the group commit: it does not
conflict with the key-share locks that foreign-key checks of cursors and messages take, so no
deadlock with them) so that a member's `joined_seq` is exactly the
`last_seq` at the moment of joining with respect to the chat actor's writes, and bump
`members_version` so that the chat actor notices its member cache is stale at its next write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from node.domain import Chat, ChatView
from node.storage.errors import ChatMissing
from node.storage.records import chat_from, user_from


class UnknownUser(Exception):
    pass


_CHAT_COLUMNS = "c.id, c.kind, c.title, c.owner_id, c.last_seq, c.created_at"
_VIEW_SELECT = f"""
    SELECT {_CHAT_COLUMNS}, cm.read_seq,
           (SELECT count(*) FROM messages m
             WHERE m.chat_id = c.id AND m.seq > greatest(cm.read_seq, cm.joined_seq)
               AND m.sender_id <> cm.user_id) AS unread_count
    FROM chat_members cm JOIN chats c ON c.id = cm.chat_id
"""


def _view_from(row: Mapping[str, Any]) -> ChatView:
    return ChatView(chat=chat_from(row), read_seq=row["read_seq"], unread_count=row["unread_count"])


class ChatStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_direct(self, user_id: int, peer_id: int) -> tuple[Chat, bool]:
        """The direct chat of this pair, created if missing; True when created now."""
        key = f"{min(user_id, peer_id)}:{max(user_id, peer_id)}"
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO chats AS c (kind, direct_key) VALUES ('direct', $1)"
                f" ON CONFLICT (direct_key) DO NOTHING RETURNING {_CHAT_COLUMNS}",
                key,
            )
            if row is None:
                row = await conn.fetchrow(
                    f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.direct_key = $1", key
                )
                assert row is not None
                return chat_from(row), False
            try:
                await conn.execute(
                    "INSERT INTO chat_members (chat_id, user_id, joined_seq)"
                    " SELECT $1, u, 0 FROM unnest($2::bigint[]) AS u",
                    row["id"],
                    [user_id, peer_id],
                )
            except asyncpg.ForeignKeyViolationError:
                raise UnknownUser(peer_id) from None
            return chat_from(row), True

    async def create_group(self, owner_id: int, title: str, member_ids: list[int]) -> Chat:
        members = list(dict.fromkeys([owner_id, *member_ids]))
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO chats AS c (kind, title, owner_id) VALUES ('group', $1, $2)"
                f" RETURNING {_CHAT_COLUMNS}",
                title,
                owner_id,
            )
            assert row is not None
            try:
                await conn.execute(
                    "INSERT INTO chat_members (chat_id, user_id, joined_seq)"
                    " SELECT $1, u, 0 FROM unnest($2::bigint[]) AS u",
                    row["id"],
                    members,
                )
            except asyncpg.ForeignKeyViolationError:
                raise UnknownUser(member_ids) from None
            return chat_from(row)

    async def views_for(self, user_id: int) -> list[ChatView]:
        """The user's chats, most recent activity first."""
        rows = await self._pool.fetch(
            _VIEW_SELECT + " WHERE cm.user_id = $1 ORDER BY c.last_activity_at DESC, c.id DESC",
            user_id,
        )
        return [_view_from(r) for r in rows]

    async def view(self, chat_id: int, user_id: int, *, with_members: bool) -> ChatView | None:
        """The chat as `user_id` sees it, or None when they are not a member."""
        row = await self._pool.fetchrow(
            _VIEW_SELECT + " WHERE cm.user_id = $2 AND c.id = $1", chat_id, user_id
        )
        if row is None:
            return None
        view = _view_from(row)
        if not with_members:
            return view
        members = await self._pool.fetch(
            "SELECT u.id, u.username, u.created_at FROM chat_members cm"
            " JOIN users u ON u.id = cm.user_id WHERE cm.chat_id = $1 ORDER BY cm.joined_at, u.id",
            chat_id,
        )
        return ChatView(view.chat, view.read_seq, view.unread_count, tuple(map(user_from, members)))

    async def get(self, chat_id: int) -> Chat | None:
        row = await self._pool.fetchrow(
            f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.id = $1", chat_id
        )
        return chat_from(row) if row else None

    async def is_member(self, chat_id: int, user_id: int) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
            )
        )

    async def add_member(self, chat_id: int, user_id: int) -> bool:
        """Add a member at the chat's current last_seq. False if they already were one."""
        async with self._pool.acquire() as conn, conn.transaction():
            last_seq = await conn.fetchval(
                "SELECT last_seq FROM chats WHERE id = $1 FOR NO KEY UPDATE", chat_id
            )
            if last_seq is None:
                raise ChatMissing(chat_id)
            try:
                status = await conn.execute(
                    "INSERT INTO chat_members (chat_id, user_id, joined_seq) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING",
                    chat_id,
                    user_id,
                    last_seq,
                )
            except asyncpg.ForeignKeyViolationError:
                raise UnknownUser(user_id) from None
            if status == "INSERT 0 0":
                return False
            await conn.execute(
                "UPDATE chats SET members_version = members_version + 1 WHERE id = $1", chat_id
            )
            return True

    async def remove_member(self, chat_id: int, user_id: int) -> bool:
        """Remove a member (and their cursors). An owner who leaves hands the group to its
        longest-standing member. False if they were not a member."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM chats WHERE id = $1 FOR NO KEY UPDATE", chat_id)
            status = await conn.execute(
                "DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
            )
            if status == "DELETE 0":
                return False
            await conn.execute(
                "DELETE FROM device_cursors WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
            )
            await conn.execute(
                "UPDATE chats SET members_version = members_version + 1,"
                " owner_id = CASE WHEN owner_id = $2 THEN (SELECT user_id FROM chat_members"
                "   WHERE chat_id = $1 ORDER BY joined_at, user_id LIMIT 1) ELSE owner_id END"
                " WHERE id = $1",
                chat_id,
                user_id,
            )
            return True

    async def members(self, chat_id: int) -> tuple[int, list[int]]:
        """(members_version, member ids), read together."""
        rows = await self._pool.fetch(
            "SELECT c.members_version, cm.user_id FROM chats c"
            " LEFT JOIN chat_members cm ON cm.chat_id = c.id WHERE c.id = $1",
            chat_id,
        )
        if not rows:
            return 0, []
        return rows[0]["members_version"], [r["user_id"] for r in rows if r["user_id"] is not None]

    async def members_joined(self, chat_id: int) -> tuple[int, dict[int, int]]:
        """(members_version, {member id: joined_seq}), read together: who receives a message
        of seq N is every member whose joined_seq is below N."""
        rows = await self._pool.fetch(
            "SELECT c.members_version, cm.user_id, cm.joined_seq FROM chats c"
            " LEFT JOIN chat_members cm ON cm.chat_id = c.id WHERE c.id = $1",
            chat_id,
        )
        if not rows:
            return 0, {}
        joined = {r["user_id"]: r["joined_seq"] for r in rows if r["user_id"] is not None}
        return rows[0]["members_version"], joined

    async def presence_watchers(
        self, user_ids: Sequence[int], max_members: int
    ) -> list[tuple[int, int]]:
        """(user, watcher) pairs: the users who share a chat of at most `max_members` members
        with each of `user_ids` (themselves excluded), in one query. Counting a chat's members
        stops past `max_members`, so a huge group costs no more than a small one."""
        rows = await self._pool.fetch(
            "WITH mine AS ("
            "  SELECT chat_id, user_id FROM chat_members WHERE user_id = ANY($1::bigint[])),"
            " small AS ("
            "  SELECT c.chat_id FROM (SELECT DISTINCT chat_id FROM mine) c"
            "  WHERE (SELECT count(*) FROM (SELECT 1 FROM chat_members m"
            "         WHERE m.chat_id = c.chat_id LIMIT $2 + 1) n) <= $2)"
            " SELECT DISTINCT mine.user_id AS subject, other.user_id AS watcher"
            " FROM mine JOIN small USING (chat_id)"
            " JOIN chat_members other ON other.chat_id = mine.chat_id"
            " WHERE other.user_id <> mine.user_id",
            list(user_ids),
            max_members,
        )
        return [(r["subject"], r["watcher"]) for r in rows]

    async def sharing_a_chat(self, user_id: int, others: Sequence[int]) -> list[int]:
        """Those of `others` who share at least one chat (of any size) with `user_id`."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT other.user_id FROM chat_members mine"
            " JOIN chat_members other ON other.chat_id = mine.chat_id"
            " WHERE mine.user_id = $1 AND other.user_id = ANY($2::bigint[])"
            "   AND other.user_id <> $1",
            user_id,
            list(others),
        )
        return [r["user_id"] for r in rows]

    async def take_ownership(self, chat_id: int) -> int | None:
        """Bump the chat's fencing epoch and return it (None: no such chat). From now on only a
        writer carrying this epoch can store messages in the chat."""
        epoch: int | None = await self._pool.fetchval(
            "UPDATE chats SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch", chat_id
        )
        return epoch

    async def mark_read(self, chat_id: int, user_id: int, seq: int) -> int | None:
        """Raise the member's read mark to `seq` (never lower it). None when not a member or
        `seq` is past the chat's last message."""
        read_seq: int | None = await self._pool.fetchval(
            "UPDATE chat_members cm SET read_seq = greatest(cm.read_seq, $3)"
            " FROM chats c WHERE c.id = cm.chat_id AND cm.chat_id = $1 AND cm.user_id = $2"
            "   AND $3 <= c.last_seq RETURNING cm.read_seq",
            chat_id,
            user_id,
            seq,
        )
        return read_seq
