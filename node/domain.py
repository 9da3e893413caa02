"""Plain records the services, actors and storage pass around (no I/O, no wire schemas)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

ChatKind = Literal["direct", "group"]
Attachment = dict[str, Any]  # a Media object as the contract shows it, stored with its message

# How a send ended. The first two carry the stored message; every other one is a failure, and
# `node.errors.send_failure` is the one mapping from these to the contract's errors, for REST
# and WebSocket alike.
SendStatus = Literal[
    "created",  # stored now, with the next seq
    "duplicate",  # this sender already sent this client_msg_id to this chat: the original
    "conflict",  # ... to another chat
    "not_member",  # the sender is not a member (or the chat does not exist: the same answer)
    "rate_limited",  # the chat's mailbox is full
    "invalid",  # PostgreSQL refused the data (the edge should have refused it first)
    "unavailable",  # a dependency is down or the chat's owner could not be reached in time
    "failed",  # a fault inside the node; the sender may retry with the same client_msg_id
]


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
    attachments: tuple[Attachment, ...] = ()


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

    status: SendStatus
    message: Message | None
    members_version: int = 0
