"""Dormant users' mailboxes: a Redis list per user (`mbox:{u:<user>}`, in the hash slot of the
user's presence) holding frames for a device to come.

Entries are `<chat_id>:<seq>:<frame>`, appended in seq order per chat (one writer per chat) by the
fan-out script. The list is a cache, not the record: it is capped at `mailbox_max` entries and
expires; `read` tells which seqs it holds so that the reader can fall back to PostgreSQL for the
rest.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from node.cluster import keys
from node.cluster.connection import RedisClient


@dataclass(slots=True)
class MailboxContents:
    """What a dormant user's mailbox held when read: frames by chat and seq."""

    frames: dict[int, dict[int, bytes]]
    count: int

    def covers(self, chat_id: int, after_seq: int, upto_seq: int) -> bool:
        held = self.frames.get(chat_id)
        return held is not None and all(s in held for s in range(after_seq + 1, upto_seq + 1))

    def high_seqs(self) -> dict[int, int]:
        return {chat: max(seqs) for chat, seqs in self.frames.items() if seqs}


def mailbox_entry(chat_id: int, seq: int, frame: bytes) -> bytes:
    return b"%d:%d:" % (chat_id, seq) + frame


class Mailboxes:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def read(self, user_id: int) -> MailboxContents:
        raw: list[bytes] = await self._redis.lrange(keys.mailbox(user_id), 0, -1)  # type: ignore[assignment]  # bytes: no decode_responses
        frames: dict[int, dict[int, bytes]] = defaultdict(dict)
        for entry in raw:
            chat, seq, frame = entry.split(b":", 2)
            frames[int(chat)][int(seq)] = frame
        return MailboxContents(frames=dict(frames), count=len(raw))

    async def trim(self, user_id: int, consumed: int) -> None:
        """Drop the first `consumed` entries (those a device read and has acked since);
        entries appended later stay."""
        await self._redis.ltrim(keys.mailbox(user_id), consumed, -1)
