"""Rows to domain records: the one place that knows column names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.domain import Chat, Message, User


def user_from(row: Mapping[str, Any]) -> User:
    return User(id=row["id"], username=row["username"], created_at=row["created_at"])


def chat_from(row: Mapping[str, Any]) -> Chat:
    return Chat(
        id=row["id"],
        kind=row["kind"],
        title=row["title"],
        owner_id=row["owner_id"],
        last_seq=row["last_seq"],
        created_at=row["created_at"],
    )


def message_from(row: Mapping[str, Any]) -> Message:
    return Message(
        id=row["id"],
        chat_id=row["chat_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        client_msg_id=row["client_msg_id"],
        text=row["text"],
        created_at=row["created_at"],
        attachments=tuple(row["attachments"] or ()),
    )


MESSAGE_COLUMNS = "id, chat_id, seq, sender_id, client_msg_id, text, attachments, created_at"
