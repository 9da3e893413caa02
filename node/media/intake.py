"""An upload's body, streamed to a temp file: never whole in memory, never without bounds.

What is guaranteed while the body comes in:

- at most `max_bytes` are accepted: one byte more and the upload fails with `TooLarge`
  (a declared `Content-Length` over the limit fails before anything is read);
- a client that sends nothing for `read_timeout` seconds, or is not done after
  `total_timeout`, fails with `RequestTimeout` — a slow client cannot hold the upload open;
- what is buffered in memory is at most one write batch (`WRITE_BATCH`) plus the chunk the
  transport just handed over; the file is an anonymous temp file (gone when closed, even if the
  process dies), written and hashed (sha256) in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

from node import errors

WRITE_BATCH = 1 << 20


@dataclass(slots=True)
class Spooled:
    """The whole body in a temp file (at position 0; the caller closes it)."""

    file: BinaryIO
    size: int
    sha256: str


async def spool(
    chunks: AsyncIterator[bytes],
    *,
    max_bytes: int,
    read_timeout: float,
    total_timeout: float,
    declared_size: int | None = None,
) -> Spooled:
    """Read `chunks` to the end into a temp file, enforcing the limits above."""
    if declared_size is not None and declared_size > max_bytes:
        raise errors.TooLarge(f"media is limited to {max_bytes} bytes")
    file: BinaryIO = tempfile.TemporaryFile()
    try:
        size, digest = await _copy(chunks, file, max_bytes, read_timeout, total_timeout)
        await asyncio.to_thread(file.seek, 0)
    except BaseException:
        file.close()
        raise
    return Spooled(file, size, digest)


async def _copy(
    chunks: AsyncIterator[bytes],
    file: BinaryIO,
    max_bytes: int,
    read_timeout: float,
    total_timeout: float,
) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    batch = bytearray()
    try:
        async with asyncio.timeout(total_timeout):
            while True:
                async with asyncio.timeout(read_timeout):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise errors.TooLarge(f"media is limited to {max_bytes} bytes")
                batch += chunk
                if len(batch) >= WRITE_BATCH:
                    full, batch = batch, bytearray()
                    await asyncio.to_thread(_write, file, digest, full)
    except TimeoutError:
        raise errors.RequestTimeout("the upload was too slow and was cut") from None
    if batch:
        await asyncio.to_thread(_write, file, digest, batch)
    return size, digest.hexdigest()


def _write(file: BinaryIO, digest: hashlib._Hash, data: bytearray) -> None:
    digest.update(data)
    file.write(data)
