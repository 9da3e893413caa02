"""Sample files and HTTP helpers for the media tests (REST over real connections)."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tests.support import Account, Api, Response

SECRET = "SECRET-METADATA-7f3a"  # put into metadata; must never come out

HTML = (
    b"<!DOCTYPE html><html><head><title>x</title></head>"
    b"<body><script>alert(document.cookie)</script></body></html>"
)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def gps_exif() -> Image.Exif:
    """EXIF with a camera make, an orientation (a quarter turn) and a GPS position."""
    exif = Image.Exif()
    exif[0x010F] = f"Camera {SECRET}"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 1.0)}  # GPS IFD
    return exif


def jpeg_with_gps(size: tuple[int, int] = (64, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(
        out, "JPEG", exif=gps_exif(), comment=SECRET.encode(), quality=90
    )
    return out.getvalue()


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, (10, 200, 10, 128)).save(out, "PNG")
    return out.getvalue()


def random_bytes(n: int) -> bytes:
    """Incompressible bytes that no sniffer recognises (they start with a fixed odd prefix)."""
    return b"\x00\x01RAW" + os.urandom(max(0, n - 5))


@dataclass
class Download:
    status: int
    headers: Any
    body: bytes


async def upload(
    api: Api, who: Account, data: bytes, content_type: str = "application/octet-stream"
) -> Response:
    return await api.call(
        "POST",
        "/api/v1/media",
        who.token,
        data=io.BytesIO(data),  # aiohttp streams a file-like body
        headers={"Content-Type": content_type},
    )


async def uploaded(api: Api, who: Account, data: bytes, content_type: str = "") -> dict[str, Any]:
    r = await upload(api, who, data, content_type or "application/octet-stream")
    assert r.status == 201, r
    return dict(r.body)


async def chunked(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def download(
    api: Api,
    who: Account | None,
    media_id: str,
    *,
    preview: bool = False,
    headers: dict[str, str] | None = None,
    base: str | None = None,
) -> Download:
    path = f"/api/v1/media/{media_id}" + ("/preview" if preview else "")
    sent = dict(headers or {})
    if who is not None:
        sent["Authorization"] = f"Bearer {who.token}"
    async with api.http.get((base or api.base) + path, headers=sent) as r:
        return Download(r.status, r.headers, await r.read())


async def send_with(
    api: Api, who: Account, chat_id: str, media_ids: list[str], text: str = ""
) -> Response:
    return await api.call(
        "POST",
        f"/api/v1/chats/{chat_id}/messages",
        who.token,
        json={"client_msg_id": uuid.uuid4().hex, "text": text, "attachments": media_ids},
    )
