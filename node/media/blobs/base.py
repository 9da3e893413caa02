"""The interface every blob store implements, and the set of stores a node has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from node import errors
from node.media.model import StoreName, Variant


class BlobMissing(Exception):
    """A file the catalog names is not (wholly) in its store."""


class BlobStore(Protocol):
    name: StoreName

    async def put(self, media_id: str, variant: Variant, source: BinaryIO, size: int) -> None:
        """Store `size` bytes read from `source` (a local file at position 0). Memory use is
        bounded by the store's chunk or part size, never the file's."""

    def read(
        self, media_id: str, variant: Variant, start: int, end: int
    ) -> AsyncGenerator[bytes, None]:
        """Bytes `start` to `end` (exclusive), in order, chunk by chunk. Raises BlobMissing
        when the store has fewer bytes than that."""

    async def delete(self, media_ids: Sequence[str]) -> None:
        """Remove every file of these media; ids with nothing stored are ignored."""


@dataclass(slots=True, frozen=True)
class BlobStores:
    """The stores a node can read (`by_name`) and the one new uploads go to (`default`)."""

    default: BlobStore
    by_name: Mapping[str, BlobStore]

    def of(self, name: str) -> BlobStore:
        """The store a media was written to; 503 when this node is not configured for it."""
        store = self.by_name.get(name)
        if store is None:
            raise errors.Unavailable(f"the {name} media store is not configured on this node")
        return store


async def read_file(source: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes of a local file, read in a worker thread."""
    return await asyncio.to_thread(source.read, size)
