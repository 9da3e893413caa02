"""The `media` table: what was uploaded, by whom, where its bytes are, and who may fetch it.

The access rule is read from the messages themselves: a media is visible to its uploader and to
every current member of a chat holding a stored message that carries it. Messages store their
attachments as Media objects in a jsonb array, and a partial GIN index over the arrays that are
not empty answers the containment query (`attachments @> '[{"id": ...}]'`) without a second
record to keep in step with the group commit — a send that fails grants nothing, and one that is
stored grants access in the same transaction that stores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from node.media.model import MediaRecord

_COLUMNS = "id, owner_id, content_type, size, sha256, store, width, height, preview_size"

# "some stored message of a chat that $2 is a member of carries media m"; the first condition
# lets the planner use the partial index messages_attachments
_SHARED_WITH = """
    EXISTS (SELECT 1 FROM messages x
            JOIN chat_members cm ON cm.chat_id = x.chat_id AND cm.user_id = $2
            WHERE x.attachments <> '[]'::jsonb
              AND x.attachments @> jsonb_build_array(jsonb_build_object('id', m.id)))
"""
_ATTACHED = """
    EXISTS (SELECT 1 FROM messages x
            WHERE x.attachments <> '[]'::jsonb
              AND x.attachments @> jsonb_build_array(jsonb_build_object('id', m.id)))
"""
_AGE = "coalesce(m.claimed_at, m.created_at)"


def _record(row: Mapping[str, Any]) -> MediaRecord:
    return MediaRecord(
        id=row["id"],
        owner_id=row["owner_id"],
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        store=row["store"],
        width=row["width"],
        height=row["height"],
        preview_size=row["preview_size"],
    )


class MediaCatalog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(self, record: MediaRecord) -> None:
        await self._pool.execute(
            f"INSERT INTO media ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            record.id,
            record.owner_id,
            record.content_type,
            record.size,
            record.sha256,
            record.store,
            record.width,
            record.height,
            record.preview_size,
        )

    async def forget(self, media_id: str) -> None:
        await self._pool.execute("DELETE FROM media WHERE id = $1", media_id)

    async def visible(self, media_id: str, user_id: int) -> MediaRecord | None:
        """The media if `user_id` may fetch it (uploader, or member of a chat where it is
        attached); None otherwise, whether or not it exists."""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM media m WHERE m.id = $1 AND (m.owner_id = $2 OR"
            f" {_SHARED_WITH})",
            media_id,
            user_id,
        )
        return None if row is None else _record(row)

    async def claim(self, owner_id: int, media_ids: Sequence[str]) -> dict[str, MediaRecord]:
        """Those of `media_ids` that `owner_id` uploaded, by id, each marked as just named in a
        send (which keeps it from the cleanup for another full age)."""
        rows = await self._pool.fetch(
            f"UPDATE media m SET claimed_at = now() WHERE m.id = ANY($1::text[])"
            f" AND m.owner_id = $2 RETURNING {_COLUMNS}",
            list(media_ids),
            owner_id,
        )
        return {row["id"]: _record(row) for row in rows}

    async def settle_attached(self, age: float) -> int:
        """Mark media older than `age` seconds that a stored message carries as attached for
        good (the cleanup then never looks at them again); how many were marked."""
        status: str = await self._pool.execute(
            f"UPDATE media m SET attached = true WHERE NOT m.attached"
            f" AND {_AGE} < now() - make_interval(secs => $1) AND {_ATTACHED}",
            age,
        )
        return int(status.rsplit(" ", 1)[1])

    async def take_unattached(self, age: float, limit: int) -> list[tuple[str, str]]:
        """Delete up to `limit` media older than `age` seconds that no stored message carries;
        their (id, store). Rows another node is deleting at the same time are skipped."""
        rows = await self._pool.fetch(
            f"""
            WITH doomed AS (
                SELECT m.id FROM media m
                WHERE NOT m.attached AND {_AGE} < now() - make_interval(secs => $1)
                  AND NOT {_ATTACHED}
                ORDER BY {_AGE}
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            )
            DELETE FROM media m USING doomed d WHERE m.id = d.id RETURNING m.id, m.store
            """,
            age,
            limit,
        )
        return [(row["id"], row["store"]) for row in rows]
