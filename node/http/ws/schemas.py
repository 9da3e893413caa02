"""Client-to-server WebSocket frames: the closed set the node accepts, validated at the edge.

The pydantic models are the schema (and the documentation's). The frames every device sends
most (`send`, and `ack`, `read`, `typing`: one ack per message received) also have a fast path,
`parse_common`, that accepts only what the models accept, with the same values, and leaves
everything else to the models, so a refused frame always gets the models' error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

from node.http.schemas import Text, storable, text_or_attachments
from node.ids import MAX_ID, MAX_SEQ, parse_id

Id = Annotated[int, BeforeValidator(parse_id), Field(json_schema_extra={"type": "string"})]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SendFrame(_Frame):
    type: Literal["send"]
    chat_id: Id
    client_msg_id: Annotated[Text, Field(min_length=1, max_length=64)]
    text: Annotated[Text, Field(max_length=4000)]  # may be empty when there are attachments
    attachments: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=10
    )

    _text_or_attachments = model_validator(mode="after")(text_or_attachments)


class AckFrame(_Frame):
    type: Literal["ack"]
    chat_id: Id
    seq: Seq


class TypingFrame(_Frame):
    type: Literal["typing"]
    chat_id: Id


class ReadFrame(_Frame):
    type: Literal["read"]
    chat_id: Id
    seq: Seq


class PingFrame(_Frame):
    type: Literal["ping"]


class PresenceQueryFrame(_Frame):
    """The count rule (1 to 200 ids) is the service's: a validation_error, not invalid_frame;
    the list is capped here only so a huge one is not parsed."""

    type: Literal["presence_query"]
    user_ids: Annotated[list[Id], Field(max_length=10_000)]


ClientFrame = Annotated[
    SendFrame | AckFrame | TypingFrame | ReadFrame | PingFrame | PresenceQueryFrame,
    Field(discriminator="type"),
]
CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


# the exact key sets of the frames `parse_common` takes (a test checks them against the models)
_ACK_KEYS = frozenset(("type", "chat_id", "seq"))
_TYPING_KEYS = frozenset(("type", "chat_id"))
_SEND_KEYS = frozenset(("type", "chat_id", "client_msg_id", "text"))
_SEND_KEYS_ATTACHED = _SEND_KEYS | {"attachments"}
CommonFrame = tuple[str, int, int]  # (type, chat_id, seq); seq is 0 for typing


@dataclass(slots=True, frozen=True)
class PlainSend:
    """A `send` frame `parse_common` took: the fields `SendFrame` would hold."""

    chat_id: int
    client_msg_id: str
    text: str
    attachments: list[str]


def parse_common(data: str) -> CommonFrame | PlainSend | None:
    """The frames devices send most, in their plain form, for a fraction of the models' cost:
    `ack`, `read`, `typing` as (type, chat_id, seq), `send` as a `PlainSend` (chat_id a decimal
    string or an integer, seq an integer, no other key). None for anything else, valid or not:
    the models decide then. Whatever this returns, `CLIENT_FRAME` accepts too, with the same
    values (tests check both ways)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    kind = obj.get("type")
    if kind == "ack" or kind == "read":
        if obj.keys() != _ACK_KEYS:
            return None
        seq = obj["seq"]
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            return None
    elif kind == "typing":
        if obj.keys() != _TYPING_KEYS:
            return None
        seq = 0
    elif kind == "send":
        return _plain_send(obj)
    else:
        return None
    chat_id = _plain_id(obj["chat_id"])
    if chat_id is None:
        return None
    return kind, chat_id, seq


def _plain_id(value: object) -> int | None:
    """`parse_id` for the plain forms only (a digit string or an int), without raising."""
    if type(value) is str:
        if not (0 < len(value) <= 19 and value.isascii() and value.isdigit()):
            return None
        value = int(value)
    elif type(value) is not int:
        return None
    return value if 1 <= value <= MAX_ID else None


def _plain_send(obj: dict[str, object]) -> PlainSend | None:
    keys = obj.keys()
    if keys == _SEND_KEYS:
        attachments: list[str] = []
    elif keys == _SEND_KEYS_ATTACHED:
        listed = obj["attachments"]
        if type(listed) is not list or len(listed) > 10:
            return None
        for name in listed:
            if type(name) is not str or not 0 < len(name) <= 64 or not _plain_text(name):
                return None
        attachments = listed
    else:
        return None
    chat_id = _plain_id(obj["chat_id"])
    cmid, text = obj["client_msg_id"], obj["text"]
    if chat_id is None or type(cmid) is not str or type(text) is not str:
        return None
    if not 0 < len(cmid) <= 64 or len(text) > 4000 or not (text or attachments):
        return None
    if not _plain_text(cmid) or not _plain_text(text):
        return None
    return PlainSend(chat_id, cmid, text, attachments)


def _plain_text(value: str) -> bool:
    """What `Text` (`storable`) accepts."""
    try:
        storable(value)
    except ValueError:
        return False
    return True
