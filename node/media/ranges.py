"""Which bytes a download sends: `Range`, `If-Range` and `If-None-Match` (RFC 9110), no I/O.

One range per request (`bytes=a-b`, `bytes=a-`, `bytes=-n`), which is what players and
resumable downloads ask for. A header this does not understand (another unit, several ranges,
bad syntax) is ignored and the whole file is sent, as RFC 9110 allows; a range that starts past
the end is 416. Validators are strong: the bytes of a media id never change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node import errors

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive
    partial: bool  # 206 with Content-Range, else 200 with the whole file

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def etag(tag: str) -> str:
    return f'"{tag}"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """True when the client already holds these bytes (`If-None-Match` names our ETag)."""
    if if_none_match is None:
        return False
    wanted = etag(tag)
    return any(
        t.strip() in ("*", wanted) or t.strip().removeprefix("W/") == wanted
        for t in if_none_match.split(",")
    )


def byte_range(range_header: str | None, if_range: str | None, tag: str, size: int) -> ByteRange:
    """The bytes to send of a file of `size` bytes. Raises RangeNotSatisfiable (416)."""
    whole = ByteRange(0, size, partial=False)
    if range_header is None:
        return whole
    if if_range is not None and if_range.strip() != etag(tag):
        return whole  # the client's copy is another version (or dated): send it all
    match = _SINGLE.match(range_header)
    if match is None:
        return whole
    first, last = match.groups()
    if not first and not last:
        return whole
    if not first:  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise errors.RangeNotSatisfiable()
        return ByteRange(max(0, size - n), size, partial=True)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return whole  # syntactically invalid: ignored
    if start >= size:
        raise errors.RangeNotSatisfiable()
    return ByteRange(start, end, partial=True)
