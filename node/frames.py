"""Server-to-client frames and the wire shape of a message, encoded with orjson.

These are the hot path: a message's frame is encoded once and the same bytes go to every
recipient. `node.http.schemas` holds the pydantic models of the same shapes (for validation and
the OpenAPI document); a test checks that both agree.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from node.domain import Message

_OPTS = orjson.OPT_UTC_Z


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTS)


def message_dict(message: Message) -> dict[str, Any]:
    """The contract's `Message` object."""
    return {
        "id": str(message.id),
        "chat_id": str(message.chat_id),
        "seq": message.seq,
        "sender_id": str(message.sender_id),
        "client_msg_id": message.client_msg_id,
        "text": message.text,
        "attachments": list(message.attachments),
        "created_at": message.created_at,
    }


@dataclass(slots=True, frozen=True)
class EncodedMessage:
    """A stored message encoded once: `json` is the Message object, `frame` its `message`
    frame; the same bytes go to every recipient."""

    message: Message
    json: bytes
    frame: bytes

    @classmethod
    def of(cls, message: Message) -> EncodedMessage:
        body = dumps(message_dict(message))
        return cls(message, body, b'{"type":"message","message":' + body + b"}")

    @property
    def seq(self) -> int:
        return self.message.seq


_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack


def ws_text(payload: bytes) -> bytes:
    """`payload` as one unmasked, unfragmented WebSocket text frame (RFC 6455 5.2), the bytes a
    server writes to the socket: encoded once and written as they are to every recipient."""
    n = len(payload)
    if n < 126:
        return _LEN1(0x81, n) + payload
    if n < 65536:
        return _LEN2(0x81, 126, n) + payload
    return _LEN3(0x81, 127, n) + payload


def message_from_json(data: bytes | str) -> Message:
    """The inverse of `message_dict` + encoding (a Message object that crossed nodes)."""
    obj = orjson.loads(data)
    return Message(
        id=int(obj["id"]),
        chat_id=int(obj["chat_id"]),
        seq=obj["seq"],
        sender_id=int(obj["sender_id"]),
        client_msg_id=obj["client_msg_id"],
        text=obj["text"],
        created_at=datetime.fromisoformat(obj["created_at"].replace("Z", "+00:00")),
        attachments=tuple(obj["attachments"]),
    )


def message_frame(message: Message) -> bytes:
    return EncodedMessage.of(message).frame


def sent_frame_from(client_msg_id: str, message_json: bytes) -> bytes:
    """The `sent` frame around an already encoded Message object."""
    return (
        b'{"type":"sent","client_msg_id":'
        + dumps(client_msg_id)
        + b',"message":'
        + message_json
        + b"}"
    )


def ready_frame(user_id: int, device_id: str, node_id: str) -> bytes:
    return dumps(
        {"type": "ready", "user_id": str(user_id), "device_id": device_id, "node_id": node_id}
    )


def error_frame(code: str, message: str, ref: str | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return dumps(frame)


def gap_frame(chat_id: int, after_seq: int, before_seq: int) -> bytes:
    return dumps(
        {"type": "gap", "chat_id": str(chat_id), "after_seq": after_seq, "before_seq": before_seq}
    )


def typing_frame(chat_id: int, user_id: int) -> bytes:
    return dumps({"type": "typing", "chat_id": str(chat_id), "user_id": str(user_id)})


def read_frame(chat_id: int, user_id: int, seq: int) -> bytes:
    return dumps({"type": "read", "chat_id": str(chat_id), "user_id": str(user_id), "seq": seq})


def presence_frame(user_id: int, online: bool) -> bytes:
    return dumps({"type": "presence", "user_id": str(user_id), "online": online})


def presence_batch_frame(changes: Sequence[tuple[int, bool]], *, listed: bool = False) -> bytes:
    """Several users' presence in one frame: `{"type":"presence","users":[{"user_id","online"}]}`;
    a single change keeps the single-user shape unless `listed` (a `presence_query` answer)."""
    if len(changes) == 1 and not listed:
        return presence_frame(*changes[0])
    users = [{"user_id": str(uid), "online": online} for uid, online in changes]
    return dumps({"type": "presence", "users": users})


PONG_FRAME = dumps({"type": "pong"})
