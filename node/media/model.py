"""Plain records of the media package (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from node.domain import Attachment

Variant = Literal["original", "preview"]
StoreName = Literal["postgres", "s3"]

PREVIEW_CONTENT_TYPE = "image/webp"


@dataclass(slots=True, frozen=True)
class MediaRecord:
    """One upload as the catalog keeps it. `size` and `sha256` describe the bytes as stored
    (an image's are those of its cleaned copy, not of what the client sent)."""

    id: str
    owner_id: int
    content_type: str
    size: int
    sha256: str
    store: StoreName
    width: int | None = None
    height: int | None = None
    preview_size: int | None = None

    @property
    def has_preview(self) -> bool:
        return self.preview_size is not None

    def attachment(self) -> Attachment:
        """The contract's `Media` object (what messages carry in `attachments`): `width` and
        `height` only where known."""
        out: Attachment = {
            "id": self.id,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.width is not None and self.height is not None:
            out["width"] = self.width
            out["height"] = self.height
        out["has_preview"] = self.has_preview
        return out

    def variant(self, variant: Variant) -> Blob | None:
        """The stored file of `variant`, with what a download needs; None: there is none."""
        if variant == "original":
            return Blob(self.id, variant, self.store, self.content_type, self.size, self.sha256)
        if self.preview_size is None:
            return None
        tag = self.sha256 + "-p"
        return Blob(self.id, variant, self.store, PREVIEW_CONTENT_TYPE, self.preview_size, tag)


@dataclass(slots=True, frozen=True)
class Blob:
    """One stored file of a media (its original or its preview). `tag` is a strong validator
    (the ETag): the bytes of a media id never change."""

    media_id: str
    variant: Variant
    store: StoreName
    content_type: str
    size: int
    tag: str
