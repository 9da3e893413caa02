"""Plain records the services, actors and storage pass around (no I/O, no wire schemas)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

ChatKind = Literal["direct", "group"]


@dataclass(slots=True, frozen=True)
class User:
    id: int
    username: str
    created_at: datetime


@dataclass(slots=True, frozen=True)
class Chat:
    id: int
    kind: ChatKind
    title: str | None
    owner_id: int | None
    last_seq: int
    created_at: datetime


@dataclass(slots=True, frozen=True)
class ChatView:
    """A chat as one member sees it: their read mark, unread count and (optionally) members."""

    chat: Chat
    read_seq: int
    unread_count: int
    members: tuple[User, ...] | None = None


@dataclass(slots=True, frozen=True)
class Message:
    id: int
    chat_id: int
    seq: int
    sender_id: int
    client_msg_id: str
    text: str
    created_at: datetime
    attachments: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True, frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


@dataclass(slots=True, frozen=True)
class ChatPosition:
    """Where one device stands in one chat when it connects."""

    chat_id: int
    joined_seq: int
    acked_seq: int  # max(cursor, joined_seq)
    last_seq: int


@dataclass(slots=True)
class PostResult:
    """The outcome of one send in a group commit (see storage.messages.post_batch)."""

    status: Literal["created", "duplicate", "conflict", "not_member"]
    message: Message | None
    members_version: int = 0
