"""The media package's pure parts without a node: sniffing against the allowlist, byte ranges,
image cleaning, and the intake's limits."""

from __future__ import annotations

import asyncio
import hashlib
import io
import wave
from collections.abc import AsyncIterator

import pytest
from PIL import Image, PngImagePlugin

from node import errors
from node.media.images import clean_image
from node.media.intake import spool
from node.media.ranges import ByteRange, byte_range, not_modified
from node.media.sniff import OCTET_STREAM, is_inline, sniff
from tests.media_support import HTML, PDF, SECRET, SVG, gps_exif, jpeg_with_gps, png


def image(fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (1, 2, 3)).save(out, fmt, **options)
    return out.getvalue()


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return out.getvalue()


MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\0" * 100
WEBM = (
    bytes.fromhex("1a45dfa3") + b"\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm" + b"\0" * 64
)
OGG = b"OggS\x00\x02" + b"\0" * 20 + b"\x01vorbis" + b"\0" * 100
MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00" + b"\0" * 400
ZIP = b"PK\x03\x04" + b"\0" * 100


@pytest.mark.parametrize(
    ("data", "hint", "expected"),
    [
        (jpeg_with_gps(), None, "image/jpeg"),
        (png(), "text/html", "image/png"),
        (image("GIF"), "image/png", "image/gif"),
        (image("WEBP"), None, "image/webp"),
        (PDF, "text/plain", "application/pdf"),
        (wav(), None, "audio/wav"),
        (MP3, None, "audio/mpeg"),
        (MP4, "image/png", "video/mp4"),
        (WEBM, None, "video/webm"),
        (OGG, None, "audio/ogg"),
        (OGG, "video/ogg", "video/ogg"),  # the hint breaks a tie between allowed candidates
        (OGG, "Video/OGG; codecs=theora", "video/ogg"),
        (HTML, "text/html", OCTET_STREAM),
        (SVG, "image/svg+xml", OCTET_STREAM),
        (ZIP, "application/zip", OCTET_STREAM),
        (b"MZ" + b"\0" * 100, None, OCTET_STREAM),
        (b"just some text", "image/png", OCTET_STREAM),  # a hint never adds a candidate
        (b"", "image/png", OCTET_STREAM),
    ],
    ids=repr,
)
def test_sniff(data: bytes, hint: str | None, expected: str) -> None:
    stream = io.BytesIO(data)
    assert sniff(stream, hint) == expected
    assert stream.tell() == 0


def test_only_images_audio_and_video_are_inline() -> None:
    assert is_inline("image/png") and is_inline("audio/ogg") and is_inline("video/mp4")
    assert not is_inline("application/pdf") and not is_inline(OCTET_STREAM)


# --- ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ByteRange(0, 100, False)),
        ("bytes=0-0", ByteRange(0, 1, True)),
        ("bytes=10-19", ByteRange(10, 20, True)),
        ("bytes=90-", ByteRange(90, 100, True)),
        ("bytes=90-500", ByteRange(90, 100, True)),
        ("bytes=-1", ByteRange(99, 100, True)),
        ("bytes=-500", ByteRange(0, 100, True)),
        ("BYTES = 5 - 6", ByteRange(5, 7, True)),
        ("bytes=20-10", ByteRange(0, 100, False)),  # invalid: ignored
        ("bytes=-", ByteRange(0, 100, False)),
        ("bytes=1-2,4-5", ByteRange(0, 100, False)),
        ("pages=1-2", ByteRange(0, 100, False)),
        ("garbage", ByteRange(0, 100, False)),
    ],
    ids=repr,
)
def test_byte_range(header: str | None, expected: ByteRange) -> None:
    assert byte_range(header, None, "t", 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=1000-2000", "bytes=-0"])
def test_unsatisfiable_range(header: str) -> None:
    with pytest.raises(errors.RangeNotSatisfiable):
        byte_range(header, None, "t", 100)


def test_if_range_and_if_none_match() -> None:
    assert byte_range("bytes=0-9", '"t"', "t", 100) == ByteRange(0, 10, True)
    assert byte_range("bytes=0-9", '"old"', "t", 100) == ByteRange(0, 100, False)
    assert byte_range("bytes=0-9", "Wed, 21 Oct 2015 07:28:00 GMT", "t", 100).partial is False
    assert ByteRange(10, 20, True).content_range(100) == "bytes 10-19/100"
    assert not_modified('"t"', "t") and not_modified('W/"t"', "t") and not_modified("*", "t")
    assert not_modified('"a", "t"', "t")
    assert not not_modified('"a"', "t") and not not_modified(None, "t")


# --- images ------------------------------------------------------------------------------------


def cleaned(data: bytes, content_type: str, max_pixels: int = 10**7) -> tuple[bytes, Image.Image]:
    result = clean_image(io.BytesIO(data), content_type, max_pixels=max_pixels)
    assert result is not None
    with result.file:
        out = result.file.read()
    assert result.size == len(out) and result.sha256 == hashlib.sha256(out).hexdigest()
    assert Image.open(io.BytesIO(result.preview)).format == "WEBP"
    return out, Image.open(io.BytesIO(out))


def test_png_text_chunks_and_exif_are_dropped() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET)
    info.add_itxt("XML:com.adobe.xmp", SECRET)
    source = io.BytesIO()
    Image.new("RGBA", (30, 20)).save(source, "PNG", pnginfo=info, exif=gps_exif())
    assert SECRET.encode() in source.getvalue()
    out, im = cleaned(source.getvalue(), "image/png")
    assert SECRET.encode() not in out and dict(im.getexif()) == {} and im.info == {}
    assert im.size == (20, 30)  # the orientation was applied


def test_webp_exif_and_xmp_are_dropped() -> None:
    data = image("WEBP", exif=gps_exif(), xmp=SECRET.encode())
    out, im = cleaned(data, "image/webp")
    assert SECRET.encode() not in out and dict(im.getexif()) == {} and "xmp" not in im.info


def test_an_animation_keeps_its_frames_and_timing_but_not_its_comment() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    source = io.BytesIO()
    frames[0].save(
        source,
        "GIF",
        save_all=True,
        append_images=frames[1:],
        comment=SECRET.encode(),
        duration=[100, 200, 300],
        loop=0,
    )
    out, im = cleaned(source.getvalue(), "image/gif")
    assert SECRET.encode() not in out and getattr(im, "n_frames", 1) == 3
    durations = []
    for i in range(3):
        im.seek(i)
        durations.append(im.info["duration"])
    assert durations == [100, 200, 300]


def test_what_cannot_be_processed_is_none() -> None:
    big = io.BytesIO()
    Image.new("L", (4000, 3000)).save(big, "PNG")
    assert clean_image(big, "image/png", max_pixels=10_000_000) is None  # 12 Mpx > 10 Mpx
    broken = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    assert clean_image(io.BytesIO(broken), "image/png", max_pixels=10**7) is None
    # only the sniffed format's decoder is tried: a GIF is not opened as a PNG
    assert clean_image(io.BytesIO(image("GIF")), "image/png", max_pixels=10**7) is None
    assert clean_image(io.BytesIO(image("PNG")), "image/heic", max_pixels=10**7) is None


# --- intake ------------------------------------------------------------------------------------


async def body(*parts: bytes, pause: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if pause is not None:
        await pause.wait()  # a client that stops sending


async def test_spool_hashes_and_keeps_everything() -> None:
    parts = [b"a" * 700_000, b"b" * 700_000, b"c"]
    spooled = await spool(body(*parts), max_bytes=2_000_000, read_timeout=5, total_timeout=5)
    with spooled.file:
        data = spooled.file.read()
    assert data == b"".join(parts) and spooled.size == len(data)
    assert spooled.sha256 == hashlib.sha256(data).hexdigest()


async def test_spool_limits() -> None:
    with pytest.raises(errors.TooLarge):
        await spool(body(b"x" * 10), max_bytes=9, read_timeout=5, total_timeout=5)
    with pytest.raises(errors.TooLarge):  # refused before a byte is read
        await spool(body(), max_bytes=9, read_timeout=5, total_timeout=5, declared_size=10)
    stalled = asyncio.Event()
    with pytest.raises(errors.RequestTimeout):
        await spool(body(b"x", pause=stalled), max_bytes=9, read_timeout=0.05, total_timeout=5)
    with pytest.raises(errors.RequestTimeout):
        await spool(body(b"x", pause=stalled), max_bytes=9, read_timeout=5, total_timeout=0.05)
