"""Media bytes in an S3-compatible object store, through aiobotocore (botocore's requests,
signing and retries on aiohttp).

Objects are `<prefix><media id>/<variant>`. A file up to `PART_SIZE` is one PUT; a larger one is
a multipart upload of `PART_SIZE` parts (aborted if anything fails). Each body is a window onto
the local file (`FileSlice`) that botocore reads as it sends, so not even a part is held in
memory (a local temp file's pages are in the page cache: these small reads do not block).

Reading asks for `WINDOW` bytes at a time with ranged GETs, each read to its end at once: an HTTP
connection to the store is never left waiting on a slow downloader (which would starve the
client's connection pool, and stores drop stalled reads).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from node.media.blobs.base import BlobMissing, read_file
from node.media.model import StoreName, Variant

PART_SIZE = 8 * 1024 * 1024  # S3's smallest part is 5 MiB
WINDOW = 1024 * 1024
_DELETE_BATCH = 1000  # S3's limit of keys per DeleteObjects
_VARIANTS: tuple[Variant, ...] = ("original", "preview")


@dataclass(slots=True, frozen=True)
class S3Config:
    bucket: str
    endpoint: str | None = None  # None: AWS itself
    region: str = "us-east-1"
    prefix: str = "media/"
    access_key_id: str | None = None  # None: botocore's usual chain (env, profile, role)
    secret_access_key: str | None = None
    max_connections: int = 32


class S3Blobs:
    name: StoreName = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, config: S3Config) -> AsyncIterator[S3Blobs]:
        """A store over one client (its own connection pool), closed on exit."""
        options = AioConfig(
            # a custom endpoint (MinIO, moto, ...) rarely has per-bucket DNS names
            s3={"addressing_style": "path" if config.endpoint else "auto"},
            max_pool_connections=config.max_connections,
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=config.endpoint,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=options,
        ) as client:
            yield cls(client, config.bucket, config.prefix)

    def key(self, media_id: str, variant: Variant) -> str:
        return f"{self._prefix}{media_id}/{variant}"

    async def put(self, media_id: str, variant: Variant, source: BinaryIO, size: int) -> None:
        key = self.key(media_id, variant)
        if size <= PART_SIZE:
            body = await _body(source, 0, size)
            await self._client.put_object(Bucket=self._bucket, Key=key, Body=body)
            return
        upload = await self._client.create_multipart_upload(Bucket=self._bucket, Key=key)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, PART_SIZE), start=1):
                part = await _body(source, start, min(PART_SIZE, size - start))
                answer = await self._client.upload_part(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            raise

    async def read(
        self, media_id: str, variant: Variant, start: int, end: int
    ) -> AsyncGenerator[bytes, None]:
        key = self.key(media_id, variant)
        pos = start
        while pos < end:
            last = min(end, pos + WINDOW) - 1
            try:
                answer = await self._client.get_object(
                    Bucket=self._bucket, Key=key, Range=f"bytes={pos}-{last}"
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "InvalidRange"):
                    raise BlobMissing(f"{key} has no byte {pos}") from None
                raise
            async with answer["Body"] as body:
                data: bytes = await body.read()
            if not data:
                raise BlobMissing(f"{key} has no byte {pos}")
            yield data
            pos += len(data)

    async def delete(self, media_ids: Sequence[str]) -> None:
        keys = [{"Key": self.key(m, v)} for m in media_ids for v in _VARIANTS]
        for i in range(0, len(keys), _DELETE_BATCH):
            await self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": keys[i : i + _DELETE_BATCH], "Quiet": True},
            )


async def _body(source: BinaryIO, start: int, length: int) -> FileSlice | bytes:
    """A request body for bytes `start`..`start + length` of `source`: a window onto a real
    file, or the bytes themselves for an in-memory one (a preview)."""
    try:
        source.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        source.seek(start)
        return await read_file(source, length)
    return FileSlice(source, start, length)


class FileSlice(io.RawIOBase):
    """Bytes `start`..`start + length` of a file as a seekable file of its own. Reads use
    `os.pread`, so slices of one file never disturb each other's position."""

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._fd = file.fileno()
        self._start = start
        self._length = length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._length - self._pos)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._start + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
