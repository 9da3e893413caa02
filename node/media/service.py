"""Media as the edges see it: upload, find for download, read, and resolve attachments.

An upload is spooled to a temp file (limits and timeouts enforced as it arrives), typed from its
bytes, cleaned and previewed when it is an image, recorded in the catalog and written to the
node's default store. Its record is written before its bytes, so a crash in between leaves a
record nobody was ever given the id of, which the cleanup deletes with its bytes like any
unattached upload.

Not found and not allowed are the same answer (404), so media ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import replace
from typing import BinaryIO

from node import errors
from node.domain import Attachment
from node.media.blobs import BlobStores
from node.media.catalog import MediaCatalog
from node.media.images import ImageProcessor
from node.media.intake import spool
from node.media.model import Blob, MediaRecord, Variant
from node.media.sniff import OCTET_STREAM, is_image, sniff

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16)


def new_media_id() -> str:
    """128 random bits: unguessable, so knowing an id is never how access is decided, and
    ids cannot be enumerated."""
    return secrets.token_urlsafe(16)


def is_media_id(value: str) -> bool:
    return _ID.match(value) is not None


class MediaService:
    def __init__(
        self,
        catalog: MediaCatalog,
        stores: BlobStores,
        images: ImageProcessor,
        *,
        max_bytes: int,
        read_timeout: float,
        upload_timeout: float,
    ) -> None:
        self._catalog = catalog
        self._stores = stores
        self._images = images
        self._max_bytes = max_bytes
        self._read_timeout = read_timeout
        self._upload_timeout = upload_timeout

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    async def upload(
        self,
        owner_id: int,
        chunks: AsyncIterator[bytes],
        *,
        declared_size: int | None = None,
        hint: str | None = None,
    ) -> MediaRecord:
        """Store a new media from `chunks` (the request body). Raises TooLarge (413),
        RequestTimeout (408), or ValidationFailed for an empty body."""
        spooled = await spool(
            chunks,
            max_bytes=self._max_bytes,
            read_timeout=self._read_timeout,
            total_timeout=self._upload_timeout,
            declared_size=declared_size,
        )
        with contextlib.ExitStack() as files:
            files.callback(spooled.file.close)
            if spooled.size == 0:
                raise errors.ValidationFailed("the body is empty", code="empty_media")
            content_type = await asyncio.to_thread(sniff, spooled.file, hint)
            source: BinaryIO = spooled.file
            record = MediaRecord(
                id=new_media_id(),
                owner_id=owner_id,
                content_type=content_type,
                size=spooled.size,
                sha256=spooled.sha256,
                store=self._stores.default.name,
            )
            preview: bytes | None = None
            if is_image(content_type):
                clean = await self._images.clean(spooled.file, content_type)
                if clean is None:  # never served as an image unless its metadata is gone
                    record = replace(record, content_type=OCTET_STREAM)
                else:
                    files.callback(clean.file.close)
                    source, preview = clean.file, clean.preview
                    record = replace(
                        record,
                        size=clean.size,
                        sha256=clean.sha256,
                        width=clean.width,
                        height=clean.height,
                        preview_size=len(preview),
                    )
            await self._store(record, source, preview)
        log.info(
            "media.uploaded",
            extra={
                "media_id": record.id,
                "user_id": owner_id,
                "content_type": record.content_type,
                "size": record.size,
                "store": record.store,
            },
        )
        return record

    async def _store(self, record: MediaRecord, source: BinaryIO, preview: bytes | None) -> None:
        store = self._stores.default
        await self._catalog.insert(record)
        try:
            source.seek(0)  # a failed image decode may have read it
            await store.put(record.id, "original", source, record.size)
            if preview is not None:
                await store.put(record.id, "preview", io.BytesIO(preview), len(preview))
        except BaseException:
            # the record names bytes that are not all there: take both back (bounded; the
            # cleanup gets whatever this cannot)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await store.delete([record.id])
                    await self._catalog.forget(record.id)
            raise

    async def find(self, user_id: int, media_id: str, variant: Variant) -> Blob:
        """The file to send `user_id`; NotFound when the media does not exist, is not visible
        to them, or has no such variant."""
        record = await self._catalog.visible(media_id, user_id) if is_media_id(media_id) else None
        blob = None if record is None else record.variant(variant)
        if blob is None:
            raise errors.NotFound("no such media")
        self._stores.of(blob.store)  # 503 now, before anything is sent, if it cannot be read
        return blob

    def read(self, blob: Blob, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes `start`..`end` (exclusive) of `blob`, chunk by chunk."""
        return self._stores.of(blob.store).read(blob.media_id, blob.variant, start, end)

    async def resolve(self, owner_id: int, media_ids: Sequence[str]) -> tuple[Attachment, ...]:
        """The Media objects a send by `owner_id` attaches, in the order given. Raises
        UnknownMedia (422) if any id is not one of the sender's uploads."""
        if not media_ids:
            return ()
        if len(set(media_ids)) != len(media_ids):
            raise errors.ValidationFailed("attachments: each media at most once")
        if not all(is_media_id(m) for m in media_ids):
            raise errors.UnknownMedia()
        found = await self._catalog.claim(owner_id, media_ids)
        if len(found) != len(media_ids):
            raise errors.UnknownMedia()
        return tuple(found[m].attachment() for m in media_ids)
