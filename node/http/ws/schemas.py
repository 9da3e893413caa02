"""Client-to-server WebSocket frames: the closed set the node accepts, validated at the edge."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

from node.http.schemas import Text, text_or_attachments
from node.ids import MAX_SEQ, parse_id

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
