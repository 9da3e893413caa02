"""Where media bytes live. Every store keeps each media's files (`original`, `preview`) by
media id and variant, writes from a local file and reads a byte range as a stream of chunks:

    PostgresBlobs   chunked rows in the node's database (the default: nothing more to run)
    S3Blobs         an S3-compatible object store (aiobotocore)

Reading never holds a backend resource (a pooled connection, an HTTP connection) while the
caller waits for a slow client: each chunk is fetched by a short request of its own.
"""

from __future__ import annotations

from node.media.blobs.base import BlobMissing, BlobStore, BlobStores
from node.media.blobs.postgres import PostgresBlobs
from node.media.blobs.s3 import S3Blobs, S3Config

__all__ = ["BlobMissing", "BlobStore", "BlobStores", "PostgresBlobs", "S3Blobs", "S3Config"]
