"""The closed, versioned set of node-to-node envelopes, and their one encoder/decoder.

Every envelope carries `v` (the wire version), `kind`, the sending node's `origin` and the W3C
trace context (`trace`, may be empty) so one message's path is one trace across nodes. Frames for
clients travel pre-encoded as JSON text (`frame`), so a message is encoded once for all its
recipients. Unknown kinds, versions or fields are refused (`extra="forbid"`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from node.domain import SendStatus

WIRE_VERSION = 1


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1  # WIRE_VERSION
    origin: str
    trace: dict[str, str] = Field(default_factory=dict)


class SendRequest(_Envelope):
    """A send for a chat this node does not own, forwarded to its owner."""

    kind: Literal["send"] = "send"
    request_id: str
    chat_id: int
    sender_id: int
    client_msg_id: str
    text: str
    attachments: list[dict[str, object]] = Field(default_factory=list)


class SendReply(_Envelope):
    """The owner's answer to a SendRequest: a status and the stored message (JSON text)."""

    kind: Literal["send_reply"] = "send_reply"
    request_id: str
    status: SendStatus
    message: str | None = None


class MessageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    frame: str


class Deliver(_Envelope):
    """Stored messages of one chat for the receiving node's devices of `user_ids`."""

    kind: Literal["deliver"] = "deliver"
    chat_id: int
    user_ids: list[int]
    messages: list[MessageEntry]
    committed_at: float  # wall clock of the commit, for the delivery latency metric


class UserFrame(_Envelope):
    """An ephemeral frame (typing, read, presence) for the devices of `user_ids`, except the
    device `skip_device` of user `skip_user` where given."""

    kind: Literal["frame"] = "frame"
    user_ids: list[int]
    frame: str
    skip_user: int | None = None
    skip_device: str | None = None


class PresenceBatch(_Envelope):
    """One interval's presence changes from the origin node (`changes`: user, online) and, for
    each watcher, which of them it is told about (indices into `changes`). One envelope a tick
    for every node holding a watcher, however many users changed."""

    kind: Literal["presence"] = "presence"
    changes: list[tuple[int, bool]]
    watchers: list[tuple[int, list[int]]]


class ChatSignal(_Envelope):
    """A typing or read signal for a chat this node does not own, forwarded to its owner."""

    kind: Literal["chat_signal"] = "chat_signal"
    chat_id: int
    user_id: int
    device_id: str
    signal: Literal["typing", "read"]
    seq: int = 0


class DeviceTaken(_Envelope):
    """The device connected elsewhere: close this node's older connection of it."""

    kind: Literal["device_taken"] = "device_taken"
    user_id: int
    device_id: str
    epoch: int


Envelope = Annotated[
    SendRequest | SendReply | Deliver | UserFrame | PresenceBatch | ChatSignal | DeviceTaken,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Envelope] = TypeAdapter(Envelope)


def encode(envelope: _Envelope) -> bytes:
    return envelope.model_dump_json().encode()


def decode(data: bytes | str) -> Envelope:
    """Raises pydantic.ValidationError for anything outside the closed set."""
    return _ADAPTER.validate_json(data)
