"""The blob stores of a node, opened from its settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from node.config import Settings
from node.media.blobs.base import BlobStore, BlobStores
from node.media.blobs.postgres import PostgresBlobs
from node.media.blobs.s3 import S3Blobs, S3Config


def s3_config(settings: Settings) -> S3Config | None:
    """The S3 store's configuration; None when no bucket is set."""
    if not settings.media_s3_bucket:
        return None
    return S3Config(
        bucket=settings.media_s3_bucket,
        endpoint=settings.media_s3_endpoint,
        region=settings.media_s3_region,
        prefix=settings.media_s3_prefix,
        access_key_id=settings.media_s3_access_key_id,
        secret_access_key=settings.media_s3_secret_access_key,
    )


@contextlib.asynccontextmanager
async def open_blob_stores(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[BlobStores]:
    """PostgreSQL is always readable (media written before a switch to S3 stay served); S3 is
    opened when a bucket is configured. New uploads go to `MESSENGER_MEDIA_STORE`."""
    postgres = PostgresBlobs(pool)
    config = s3_config(settings)
    if config is None:
        yield BlobStores(default=postgres, by_name={"postgres": postgres})
        return
    async with S3Blobs.connect(config) as s3:
        default: BlobStore = s3 if settings.media_store == "s3" else postgres
        yield BlobStores(default=default, by_name={"postgres": postgres, "s3": s3})
