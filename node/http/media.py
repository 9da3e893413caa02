"""Media over REST: `POST /api/v1/media` (raw bytes in), `GET /api/v1/media/{id}` and
`GET /api/v1/media/{id}/preview` (bytes out, streamed).

Downloads are safe to open on our own origin whatever they hold: `nosniff`, a sandboxing CSP,
and anything that is not an image, audio or video comes as an attachment, so nothing ever renders
as a page of ours. Bytes are streamed chunk by chunk from the store with the response's own
backpressure: a slow client slows the reading, it never fills memory.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
from typing import Any

from aiohttp import hdrs, web

from node import errors
from node.http import schemas
from node.http.endpoints import RouteTable, reply
from node.http.keys import MEDIA
from node.http.middleware import error_response
from node.media.model import Blob, Variant
from node.media.ranges import ByteRange, byte_range, etag, not_modified
from node.media.sniff import is_inline

log = logging.getLogger(__name__)

routes = RouteTable()

SAFETY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # a file opened directly is shown, never run: no script, no plugin, no form, opaque origin
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self';"
    " style-src 'unsafe-inline'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    # ids are immutable, but each answer depends on who asks
    "Cache-Control": "private, max-age=31536000, immutable",
}

_BINARY = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file's raw bytes. Its `Content-Type` is a hint only: the type is"
        " taken from the bytes.",
        "content": {"*/*": _BINARY},
    },
}
_DOWNLOAD_HEADERS = {
    "ETag": {"schema": {"type": "string"}},
    "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
    "X-Content-Type-Options": {"schema": {"type": "string", "const": "nosniff"}},
    "Content-Disposition": {
        "description": "`attachment` for anything but images, audio and video",
        "schema": {"type": "string"},
    },
}
_DOWNLOAD_DOC: dict[str, Any] = {
    "responses": {
        "200": {
            "description": "the bytes (`Range: bytes=a-b` for a part)",
            "headers": _DOWNLOAD_HEADERS,
            "content": {"*/*": _BINARY},
        },
        "206": {
            "description": "the requested range, with `Content-Range`",
            "headers": _DOWNLOAD_HEADERS,
            "content": {"*/*": _BINARY},
        },
        "304": {"description": "`If-None-Match` named the current ETag"},
    },
}
_PREVIEW_DOC: dict[str, Any] = {
    "responses": {
        "200": {
            "description": "a small WebP image",
            "headers": _DOWNLOAD_HEADERS,
            "content": {"image/webp": _BINARY},
        },
        "206": _DOWNLOAD_DOC["responses"]["206"],
        "304": _DOWNLOAD_DOC["responses"]["304"],
    },
}


@routes.post(
    "/api/v1/media",
    summary="Upload a file",
    response=schemas.Media,
    status=201,
    errors=(
        errors.RequestTimeout,
        errors.TooLarge,
        errors.ValidationFailed(code="empty_media"),
        errors.Unavailable,
    ),
    openapi=_UPLOAD_DOC,
)
async def upload_media(request: web.Request, me: int) -> web.Response:
    """Streamed, size-limited (413 past the limit), sha256-hashed; its type comes from its
    bytes. Images are stored without their metadata (EXIF, GPS) and get a preview. An upload
    that stalls or takes too long is cut (408). Attach it to a message within the cleanup age,
    or it is deleted."""
    try:
        record = await request.app[MEDIA].upload(
            me,
            request.content.iter_any(),
            declared_size=request.content_length,
            hint=request.headers.get(hdrs.CONTENT_TYPE),
        )
    except (errors.TooLarge, errors.RequestTimeout) as exc:
        return _cut(exc)
    except ConnectionError:  # the client went away mid-body: nobody to tell, nothing to log
        raise errors.BadRequest("the upload was interrupted", code="upload_interrupted") from None
    return reply(schemas.media_out(record.attachment()), status=201)


@routes.get(
    "/api/v1/media/{id}",
    summary="Download a file",
    response=None,
    errors=(errors.RangeNotSatisfiable, errors.Unavailable),
    openapi=_DOWNLOAD_DOC,
)
async def download_media(request: web.Request, me: int, id: str) -> web.StreamResponse:
    """For its uploader and members of a chat where it is attached; 404 for anyone else.
    `Range` (one range) gives 206; images, audio and video are inline, anything else an
    attachment."""
    return await _send(request, me, id, "original")


@routes.get(
    "/api/v1/media/{id}/preview",
    summary="A small preview of an image",
    response=None,
    errors=(errors.RangeNotSatisfiable, errors.Unavailable),
    openapi=_PREVIEW_DOC,
)
async def media_preview(request: web.Request, me: int, id: str) -> web.StreamResponse:
    """The same access rule as the file; 404 when there is no preview (`has_preview`)."""
    return await _send(request, me, id, "preview")


def _cut(exc: errors.ApiError) -> web.Response:
    """An upload refused before its body was read: answer and close the connection (aiohttp
    still reads and drops what is in flight for a few seconds, so the client sees the answer)."""
    response = error_response(exc.status, exc.code, exc.message)
    response.force_close()
    return response


async def _send(
    request: web.Request, me: int, media_id: str, variant: Variant
) -> web.StreamResponse:
    media = request.app[MEDIA]
    blob = await media.find(me, media_id, variant)
    headers = _headers(blob)
    if not_modified(request.headers.get(hdrs.IF_NONE_MATCH), blob.tag):
        return web.Response(status=304, headers=headers)
    try:
        part = byte_range(
            request.headers.get(hdrs.RANGE), request.headers.get(hdrs.IF_RANGE), blob.tag, blob.size
        )
    except errors.RangeNotSatisfiable as exc:
        refusal = error_response(exc.status, exc.code, exc.message)
        refusal.headers.update(SAFETY_HEADERS)
        refusal.headers[hdrs.CONTENT_RANGE] = f"bytes */{blob.size}"
        return refusal
    response = _prepare(blob, part, headers)
    await response.prepare(request)
    try:
        async with contextlib.aclosing(media.read(blob, part.start, part.end)) as chunks:
            async for chunk in chunks:
                await response.write(chunk)
    except ConnectionError:  # the client went away: nothing to answer
        return response
    except Exception:
        # the status line is sent: all that is left is to cut the body short, which the client
        # sees (fewer bytes than Content-Length)
        log.exception("media.stream_failed", extra={"media_id": blob.media_id})
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _headers(blob: Blob) -> dict[str, str]:
    headers = {
        **SAFETY_HEADERS,
        hdrs.ETAG: etag(blob.tag),
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.CONTENT_TYPE: blob.content_type,
    }
    if not is_inline(blob.content_type):
        extension = mimetypes.guess_extension(blob.content_type) or ""
        name = blob.media_id + ("" if extension == ".bin" else extension)
        headers[hdrs.CONTENT_DISPOSITION] = f'attachment; filename="{name}"'
    return headers


def _prepare(blob: Blob, part: ByteRange, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(status=206 if part.partial else 200, headers=headers)
    response.content_length = part.length
    if part.partial:
        response.headers[hdrs.CONTENT_RANGE] = part.content_range(blob.size)
    return response
