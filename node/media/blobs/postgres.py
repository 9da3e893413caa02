"""Media bytes as rows of `media_chunks` in the node's own PostgreSQL.

Writing is one COPY fed chunk by chunk from the local file. Reading fetches one chunk per short
query on a pooled connection returned at once, so a slow downloader holds no connection; a range
is cut inside PostgreSQL (`substring` on an uncompressed, out-of-line value reads only the pages
it needs). Chunk rows belong to their `media` row (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import BinaryIO

import asyncpg

from node.media.blobs.base import BlobMissing, read_file
from node.media.model import StoreName, Variant

CHUNK_SIZE = 512 * 1024


class PostgresBlobs:
    name: StoreName = "postgres"

    def __init__(self, pool: asyncpg.Pool, *, chunk_size: int = CHUNK_SIZE) -> None:
        self._pool = pool
        self._chunk_size = chunk_size

    async def put(self, media_id: str, variant: Variant, source: BinaryIO, size: int) -> None:
        async def rows() -> AsyncIterator[tuple[str, str, int, bytes]]:
            pos = 0
            while pos < size:
                data = await read_file(source, min(self._chunk_size, size - pos))
                if not data:
                    raise BlobMissing(f"the source ended at {pos} of {size} bytes")
                yield media_id, variant, pos, data
                pos += len(data)

        async with self._pool.acquire() as conn:
            await conn.copy_records_to_table(
                "media_chunks", records=rows(), columns=["media_id", "variant", "pos", "data"]
            )

    async def read(
        self, media_id: str, variant: Variant, start: int, end: int
    ) -> AsyncGenerator[bytes, None]:
        pos = start
        while pos < end:
            # the chunk holding byte `pos`, from `pos` on, at most what is still wanted
            data: bytes | None = await self._pool.fetchval(
                "SELECT substring(data FROM ($3 - pos + 1)::int FOR $4::int) FROM media_chunks"
                " WHERE media_id = $1 AND variant = $2 AND pos <= $3 ORDER BY pos DESC LIMIT 1",
                media_id,
                variant,
                pos,
                min(end - pos, self._chunk_size),
            )
            if not data:
                raise BlobMissing(f"{media_id}/{variant} has no byte {pos}")
            yield data
            pos += len(data)

    async def delete(self, media_ids: Sequence[str]) -> None:
        await self._pool.execute(
            "DELETE FROM media_chunks WHERE media_id = ANY($1::text[])", list(media_ids)
        )
