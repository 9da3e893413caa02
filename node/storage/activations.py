"""Chat activations batched across chats: the fencing-epoch bump and the member list a chat
actor needs when it starts, for many chats in two statements.

A chat actor starting bumps its chat's fencing epoch (from then on only a writer carrying the new
epoch may store messages in the chat, see `ChatStore.take_ownership`) and then reads the members.
Served one chat at a time that is two round trips per chat on a pool of a few connections, which
a node activating thousands of chats at once (a connect storm, a node's chats moving here after it
died) queues for seconds. Here the requests of every chat starting while a call is in flight go
out together (`Batcher`): one `UPDATE ... WHERE id = ANY(...)` bumps every epoch, then one
`SELECT` reads every member list, on one connection, in that order: the members are read after the
bump, as `ChatActor` did (a member who joins later bumps `members_version`, which the actor
checks at its next write).

Guarantees: each chat's epoch moves by exactly one per request and the request gets that epoch;
rows are locked in id order (two batches in flight, or a batch and a group commit, cannot
deadlock on them); a chat asked for twice in one batch gets one bump and the second request an
error (one node runs one actor per chat, so it does not happen); a chat that does not exist
gets None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from node.batching import Batcher
from node.storage.errors import CONNECTION_ERRORS

_BUMP = (
    "UPDATE chats c SET epoch = c.epoch + 1"
    " FROM (SELECT id FROM chats WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE) l"
    " WHERE c.id = l.id RETURNING c.id, c.epoch"
)

_MEMBERS = (
    "SELECT c.id, c.members_version, cm.user_id, cm.joined_seq FROM chats c"
    " LEFT JOIN chat_members cm ON cm.chat_id = c.id WHERE c.id = ANY($1::bigint[])"
)


@dataclass(slots=True, frozen=True)
class Activation:
    """A chat's new fencing epoch, and its members as read after the bump."""

    epoch: int
    members_version: int
    joined: dict[int, int]  # member -> joined_seq


class DuplicateActivation(RuntimeError):
    """The same chat was asked for twice in one batch."""


class ChatActivations:
    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 1000, parallel: int = 2) -> None:
        self._pool = pool
        self._batcher = Batcher[int, "Activation | None"](
            self._serve,
            name="chat_activations",
            max_batch=max_batch,
            parallel=parallel,
            whole_batch=CONNECTION_ERRORS,
        )

    @property
    def calls(self) -> int:
        """Batches served (each: two statements)."""
        return self._batcher.calls

    async def activate(self, chat_id: int) -> Activation | None:
        """Bump the chat's fencing epoch and read its members; None: no such chat."""
        return await self._batcher(chat_id)

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def _serve(self, chat_ids: Sequence[int]) -> list[Activation | BaseException | None]:
        distinct = sorted(set(chat_ids))
        async with self._pool.acquire() as conn:
            bumped = await conn.fetch(_BUMP, distinct)
            epochs: dict[int, int] = {row["id"]: row["epoch"] for row in bumped}
            rows = await conn.fetch(_MEMBERS, list(epochs)) if epochs else []
        versions: dict[int, int] = {}
        joined: dict[int, dict[int, int]] = {chat: {} for chat in epochs}
        for row in rows:
            versions[row["id"]] = row["members_version"]
            if row["user_id"] is not None:
                joined[row["id"]][row["user_id"]] = row["joined_seq"]
        out: list[Activation | BaseException | None] = []
        seen: set[int] = set()
        for chat in chat_ids:
            if chat in seen:
                out.append(DuplicateActivation(f"chat {chat} asked for twice in one batch"))
                continue
            seen.add(chat)
            epoch = epochs.get(chat)
            out.append(
                None if epoch is None else Activation(epoch, versions.get(chat, 0), joined[chat])
            )
        return out
