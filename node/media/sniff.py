"""What a file is, from its bytes, and whether we serve it as what it is.

The type comes from the file's magic numbers (`puremagic`: maintained, pure Python so the
embedded default needs no libmagic, and it ranks every candidate by confidence). Only types on
the allowlist keep their name; anything else is `application/octet-stream`. The client's
`Content-Type` is a hint and nothing more: it only breaks a tie between equally likely allowed
candidates (an Ogg file is audio or video; an AVIF is also an MP4), never adds a candidate.

SVG is deliberately not allowed: it is an image that can carry script.
"""

from __future__ import annotations

from typing import BinaryIO

import puremagic

OCTET_STREAM = "application/octet-stream"

# puremagic's extensions -> the content type we serve. puremagic's own MIME names are uneven
# (empty for some, several spellings for others), so the allowlist is keyed by extension.
ALLOWED: dict[str, str] = {
    # images
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".png": "image/png",
    ".apng": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".avif": "image/avif",
    ".heic": "image/heic",
    ".heif": "image/heif",
    # audio
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    # video
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".ogv": "video/ogg",
    ".3gp": "video/3gpp",
    # documents
    ".pdf": "application/pdf",
}

_INLINE_KINDS = ("image/", "audio/", "video/")


def sniff(stream: BinaryIO, hint: str | None = None) -> str:
    """The content type of the seekable `stream` (read from its head and tail; blocking I/O:
    run it in a thread for a file). `hint` is the client's `Content-Type`."""
    try:
        candidates = puremagic.magic_stream(stream)
    except (puremagic.PureError, ValueError):  # nothing matched, or an empty file
        return OCTET_STREAM
    finally:
        stream.seek(0)
    allowed = [(c.confidence, ALLOWED[c.extension]) for c in candidates if c.extension in ALLOWED]
    if not allowed:
        return OCTET_STREAM
    best = max(confidence for confidence, _ in allowed)
    top = [content_type for confidence, content_type in allowed if confidence == best]
    wanted = _bare(hint)
    return wanted if wanted in top else top[0]


def is_inline(content_type: str) -> bool:
    """Served for display (image, audio, video); anything else is served as a download."""
    return content_type.startswith(_INLINE_KINDS)


def is_image(content_type: str) -> bool:
    return content_type.startswith("image/")


def _bare(content_type: str | None) -> str:
    """`Image/PNG; charset=x` -> `image/png`."""
    return (content_type or "").split(";", 1)[0].strip().lower()
