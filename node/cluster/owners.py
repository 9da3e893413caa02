"""A short-lived memory of which other node owns a chat, so that a busy chat owned elsewhere
does not cost a Redis read per command. Entries expire after a second and are dropped at once when
the owner turns out to be unreachable; the directory (leases) stays the truth."""

from __future__ import annotations

import time

_TTL = 1.0


class RemoteOwners:
    def __init__(self) -> None:
        self._owners: dict[int, tuple[str, float]] = {}  # chat -> (owner, valid until)

    def get(self, chat_id: int) -> str | None:
        cached = self._owners.get(chat_id)
        if cached is None:
            return None
        if cached[1] <= time.monotonic():
            del self._owners[chat_id]
            return None
        return cached[0]

    def remember(self, chat_id: int, owner: str) -> None:
        self._owners[chat_id] = (owner, time.monotonic() + _TTL)

    def forget(self, chat_id: int) -> None:
        self._owners.pop(chat_id, None)
