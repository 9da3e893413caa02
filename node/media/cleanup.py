"""Uploads never attached to a message are deleted after a while (the supervised loop).

Every `interval` the loop first marks old media that a stored message carries as attached for
good, then deletes, in batches, the media older than `age` (counted from upload, or from the
last send that named it) that no stored message carries — their record first, then their bytes.
Nodes may sweep at the same time: each batch locks its rows and skips rows locked by another.
A record deleted whose bytes could not be deleted (the store was down) leaves orphaned bytes,
never a record without bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from node.media.blobs import BlobStores
from node.media.catalog import MediaCatalog

log = logging.getLogger(__name__)

BATCH = 100


class MediaCleanup:
    def __init__(self, catalog: MediaCatalog, stores: BlobStores, *, age: float) -> None:
        self._catalog = catalog
        self._stores = stores
        self._age = age
        self.interval = min(max(age / 4, 1.0), 3600.0)

    async def run(self) -> None:
        """Sweep, then wait `interval`, forever. A failed sweep is logged and tried again at
        the next interval (the database being down shows in /healthz already)."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("media.cleanup_failed")
            await asyncio.sleep(self.interval)

    async def sweep(self, age: float | None = None) -> int:
        """One pass; how many media were deleted. `age` overrides the configured age."""
        age = self._age if age is None else age
        await self._catalog.settle_attached(age)
        deleted = 0
        while True:
            taken = await self._catalog.take_unattached(age, BATCH)
            by_store: dict[str, list[str]] = defaultdict(list)
            for media_id, store in taken:
                by_store[store].append(media_id)
            for name, media_ids in by_store.items():
                blobs = self._stores.by_name.get(name)
                if blobs is None:
                    log.warning("media.cleanup_store_missing", extra={"store": name})
                    continue
                await blobs.delete(media_ids)
            deleted += len(taken)
            if len(taken) < BATCH:
                break
        if deleted:
            log.info("media.cleaned", extra={"deleted": deleted})
        return deleted
