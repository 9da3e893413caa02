"""The web client's files, read once from the package into memory.

The files are small (tens of KiB) and fixed for the life of the process, so serving them from a
dict is the simplest safe choice: a request can only ever name a file that is in the dict, so there
is no path to traverse, and every answer has a strong `ETag` for cheap revalidation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _walk(folder: Traversable, prefix: str) -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            found |= _walk(entry, f"{name}/")
            continue
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        content_type = _TYPES.get(suffix)
        if content_type is None:  # only known kinds are served; anything else stays private
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[name] = Asset(body, content_type, etag)
    return found


def load_assets() -> dict[str, Asset]:
    """Every servable file under `node/web/static`, by its path relative to that folder."""
    return _walk(resources.files("node.web") / "static", "")
