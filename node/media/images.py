"""Images: metadata stripped, orientation applied, a small preview made (Pillow).

An image is decoded and encoded again in its own format, carrying over only its pixels, its
colour profile and, for animations, its timing: EXIF (GPS, camera, times), XMP, IPTC, comments
and text chunks are gone. The EXIF orientation is applied to the pixels first, so a photo still
stands the right way up without it.

Decoding is bounded: only the decoder of the format the bytes were sniffed as is tried, and an
image of more than `max_pixels` pixels (all frames together) is never decoded — Pillow's own
decompression-bomb limit is set to the same number. An image that cannot be processed for any
reason gives None; the caller then stores it as an opaque file, never as an image.

The work is CPU-bound and blocking: `ImageProcessor` runs it in worker threads, at most
`workers` at once, which also bounds the memory it takes (about 4 bytes a pixel per worker).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import Image, ImageOps, features

log = logging.getLogger(__name__)

PREVIEW_BOX = (320, 320)
PREVIEW_QUALITY = 75
_HASH_CHUNK = 1 << 20

# content type -> Pillow format (the only decoder tried for it, and the encoder used)
_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
}
if features.check("avif"):
    _FORMATS["image/avif"] = "AVIF"

# image info worth keeping: how frames are shown. Everything else (exif, xmp, comment, text
# chunks, icc_profile — passed explicitly) is dropped before saving.
_KEEP_INFO = frozenset({"transparency", "duration", "loop", "background", "disposal", "blend"})
_ORIENTATION = 0x0112


@dataclass(slots=True)
class CleanImage:
    """A cleaned image in a temp file (`file`, at position 0; the caller closes it)."""

    file: BinaryIO
    size: int
    sha256: str
    width: int
    height: int
    preview: bytes


def can_process(content_type: str) -> bool:
    return content_type in _FORMATS


def clean_image(source: BinaryIO, content_type: str, *, max_pixels: int) -> CleanImage | None:
    """`source` (seekable) cleaned and previewed; None when it cannot be. Blocking."""
    fmt = _FORMATS.get(content_type)
    if fmt is None:
        return None
    source.seek(0)
    out: BinaryIO = tempfile.TemporaryFile()
    try:
        with Image.open(source, formats=[fmt]) as im:
            width, height = im.size
            frames = getattr(im, "n_frames", 1)
            if width * height * frames > max_pixels:
                log.info(
                    "media.image_too_large",
                    extra={"width": width, "height": height, "frames": frames},
                )
                out.close()
                return None
            width, height, preview = _clean(im, fmt, frames, out)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,  # where warnings are errors
    ) as exc:
        log.info("media.image_unreadable", extra={"format": fmt, "error": type(exc).__name__})
        out.close()
        return None
    except BaseException:
        out.close()
        raise
    size, digest = _digest(out)
    return CleanImage(out, size, digest, width, height, preview)


def _clean(im: Image.Image, fmt: str, frames: int, out: BinaryIO) -> tuple[int, int, bytes]:
    """Write `im` without metadata to `out`; its size as written, and its preview."""
    icc = im.info.get("icc_profile")
    animated = frames > 1
    if not animated:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
    im.info = {k: v for k, v in im.info.items() if k in _KEEP_INFO}
    im.save(out, format=fmt, **_save_options(fmt, animated, icc))
    width, height = im.size  # after orientation: a quarter turn swaps them
    if animated:
        im.seek(0)
    return width, height, _preview(im)


def _save_options(fmt: str, animated: bool, icc: bytes | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if icc:
        options["icc_profile"] = icc
    if animated:
        options["save_all"] = True
    if fmt == "JPEG":
        # the source's own quantisation: no visible loss from the second encoding
        options.update(quality="keep", subsampling="keep", exif=b"")
    elif fmt in ("WEBP", "AVIF"):
        options.update(quality=90, exif=b"", xmp=b"")
    elif fmt == "PNG":
        options.update(exif=b"")
    return options


def _preview(im: Image.Image) -> bytes:
    """A small WebP of the (first frame of the) image; `im` is shrunk in place."""
    im.thumbnail(PREVIEW_BOX)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    small = im.convert("RGBA" if has_alpha else "RGB")
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=PREVIEW_QUALITY)
    return buffer.getvalue()


def _digest(file: BinaryIO) -> tuple[int, str]:
    file.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := file.read(_HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    file.seek(0)
    return size, digest.hexdigest()


class ImageProcessor:
    """Runs `clean_image` in threads, at most `workers` at a time (CPU and memory bound)."""

    def __init__(self, *, max_pixels: int, workers: int) -> None:
        self._max_pixels = max_pixels
        self._slots = asyncio.Semaphore(workers)
        # Pillow's own guard, in the same terms (it is process-wide: every node process uses
        # one setting)
        Image.MAX_IMAGE_PIXELS = max_pixels

    async def clean(self, source: BinaryIO, content_type: str) -> CleanImage | None:
        if not can_process(content_type):
            return None
        async with self._slots:
            return await asyncio.to_thread(
                clean_image, source, content_type, max_pixels=self._max_pixels
            )
