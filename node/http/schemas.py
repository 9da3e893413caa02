"""pydantic models of every REST body, query and response of the contract.

Request models validate what clients send (`extra="forbid"`: an unknown field is a 422, not
silently ignored). Response models document what the node sends; the bodies themselves are built
by the small `*_out` functions below (and `node.frames.message_dict` for messages) and encoded
with `node.frames.dumps`, and a test checks that every renderer's output validates against its
model. Both the route table and the OpenAPI document use these classes, so the document cannot
drift from the code.

Ids are strings on the wire. In bodies an id may be a decimal string or a JSON integer; it becomes
an `int` inside. Times are RFC 3339 UTC strings ending in `Z`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from node import domain
from node.ids import ID_PATTERN, MAX_SEQ, parse_id

# NUL, and lone surrogates (which have no UTF-8 form): PostgreSQL cannot store either in text
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> str:
    """`value` if PostgreSQL can store it as text; refused (422) otherwise. Every string that
    enters the node goes through this (the `Text` type), so storage never sees one it cannot
    take."""
    if _UNSTORABLE.search(value):
        raise ValueError("must be Unicode text without NUL characters")
    return value


Text = Annotated[str, AfterValidator(storable)]
"""Any text a client sends: a username, title, message, query, token, id of its own."""

Id = Annotated[
    int,
    BeforeValidator(parse_id),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "examples": ["42"]}),
]
IdOut = Annotated[str, Field(pattern=ID_PATTERN, examples=["42"])]
Username = Annotated[Text, Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Password = Annotated[Text, Field(min_length=8, max_length=128)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


def _no_default(schema: dict[str, Any]) -> None:
    """Leave `default: null` out of an optional field's schema: absent, never null, on the wire."""
    schema.pop("default", None)


class _Sendable(Protocol):
    text: str
    attachments: list[str]


S = TypeVar("S", bound=_Sendable)


def text_or_attachments(message: S) -> S:
    """Message text is 1-4000 characters, or empty when the message has attachments (the
    REST body and the WebSocket `send` frame share this rule)."""
    if not message.text and not message.attachments:
        raise ValueError("text: at least 1 character, unless the message has attachments")
    return message


class Body(BaseModel):
    """Base of request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Base of response models (documentation; tests validate rendered bodies against them)."""

    model_config = ConfigDict(extra="forbid")


# --- responses ---------------------------------------------------------------------------------


class User(Out):
    id: IdOut
    username: str
    created_at: datetime


class Registered(Out):
    user: User


class Tokens(Out):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="lifetime of the access token, seconds")


class Chat(Out):
    id: IdOut
    kind: Literal["direct", "group"]
    title: str | None = Field(description="null for direct chats")
    owner_id: IdOut | None = Field(description="null for direct chats")
    members: list[User] | SkipJsonSchema[None] = Field(
        default=None,
        description="present on a single chat (GET /chats/{id} and member changes), not in lists",
        json_schema_extra=_no_default,
    )
    last_seq: int = Field(description="seq of the chat's newest message, 0 when empty")
    read_seq: int = Field(description="how far you have read")
    unread_count: int = Field(description="messages of others above your read mark")
    created_at: datetime


class Media(Out):
    id: str = Field(description="opaque and unguessable", examples=["kq3Yc1v2QzS0bFhZqg9b3w"])
    content_type: str = Field(
        description="taken from the bytes (images, audio, video, PDF); anything else is"
        " application/octet-stream",
        examples=["image/jpeg"],
    )
    size: int = Field(description="bytes, as stored (an image without its metadata)")
    sha256: str = Field(description="hex digest of the bytes as stored")
    width: int | SkipJsonSchema[None] = Field(
        default=None, description="images only, in pixels", json_schema_extra=_no_default
    )
    height: int | SkipJsonSchema[None] = Field(
        default=None, description="images only, in pixels", json_schema_extra=_no_default
    )
    has_preview: bool = Field(description="GET /api/v1/media/{id}/preview has a small image")


class Message(Out):
    id: IdOut
    chat_id: IdOut
    seq: int = Field(description="per chat: 1, 2, 3 ... without gaps, in the order accepted")
    sender_id: IdOut
    client_msg_id: str
    text: str
    attachments: list[Media]
    created_at: datetime


T = TypeVar("T")


class ItemsOf(Out, Generic[T]):
    items: list[T]


class UserList(ItemsOf[User]):
    pass


class ChatList(ItemsOf[Chat]):
    pass


class MessageList(ItemsOf[Message]):
    pass


class ErrorDetail(Out):
    code: str = Field(description="snake_case, stable", examples=["not_found"])
    message: str = Field(description="human text")


class ErrorBody(Out):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    node_id: str
    failing: list[str] | SkipJsonSchema[None] = Field(
        default=None,
        description="what is down, on 503 only: `postgres`, `redis`, or a part of the node"
        " that is not running (`commits`, `inbox`, `outbound`, ...)",
        json_schema_extra=_no_default,
    )


# --- requests ----------------------------------------------------------------------------------


class Register(Body):
    username: Username
    password: Password


class Login(Body):
    # Deliberately looser than Register: a login that cannot match any account is a 401
    # `invalid_credentials`, not a 422 that tells which rule the input broke.
    username: Text = Field(max_length=64)
    password: Text = Field(max_length=1024)


class RefreshToken(Body):
    refresh_token: Text = Field(min_length=1, max_length=512)


class CreateDirectChat(Body):
    kind: Literal["direct"]
    user_id: Id


class CreateGroupChat(Body):
    kind: Literal["group"]
    title: Text = Field(min_length=1, max_length=200)
    member_ids: list[Id] = Field(
        default_factory=list, max_length=1000, description="besides the creator, who is always one"
    )


AnyCreateChat = Annotated[CreateDirectChat | CreateGroupChat, Field(discriminator="kind")]


class CreateChat(RootModel[AnyCreateChat]):
    """`{"kind": "direct", "user_id"}` or `{"kind": "group", "title", "member_ids"}`."""


class AddMember(Body):
    user_id: Id


class SendMessage(Body):
    client_msg_id: Text = Field(
        min_length=1, max_length=64, description="unique per sender across all chats"
    )
    text: Text = Field(
        max_length=4000, description="1-4000 characters; may be empty when there are attachments"
    )
    attachments: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=10, description="ids of media you uploaded"
    )

    _text_or_attachments = model_validator(mode="after")(text_or_attachments)


# --- query strings -----------------------------------------------------------------------------


class Query(BaseModel):
    """Base of query-string models: unknown parameters are ignored (cache busters etc.)."""

    model_config = ConfigDict(extra="ignore")


class UserSearch(Query):
    q: Text = Field(default="", max_length=32, description="username prefix, case-insensitive")
    limit: int = Field(default=20, ge=1, le=100)


class HistoryPage(Query):
    after_seq: Seq | None = Field(default=None, description="oldest first from just above this seq")
    before_seq: Seq | None = Field(
        default=None, description="below this seq; alone: the newest page below it"
    )
    limit: int = Field(default=50, ge=1, le=200)


# --- rendering ---------------------------------------------------------------------------------


def media_out(attachment: domain.Attachment) -> dict[str, Any]:
    """The contract's `Media` object (as messages carry it, and as an upload answers)."""
    return dict(attachment)


def user_out(user: domain.User) -> dict[str, Any]:
    """The contract's `User` object."""
    return {"id": str(user.id), "username": user.username, "created_at": user.created_at}


def tokens_out(tokens: domain.Tokens) -> dict[str, Any]:
    """The contract's `Tokens` object."""
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": tokens.token_type,
        "expires_in": tokens.expires_in,
    }


def chat_out(view: domain.ChatView) -> dict[str, Any]:
    """The contract's `Chat` object as the viewer sees it; `members` only when the view has
    them."""
    chat = view.chat
    out: dict[str, Any] = {
        "id": str(chat.id),
        "kind": chat.kind,
        "title": chat.title,
        "owner_id": None if chat.owner_id is None else str(chat.owner_id),
        "last_seq": chat.last_seq,
        "read_seq": view.read_seq,
        "unread_count": view.unread_count,
        "created_at": chat.created_at,
    }
    if view.members is not None:
        out["members"] = [user_out(u) for u in view.members]
    return out


def error_out(code: str, message: str) -> dict[str, Any]:
    """The contract's error body."""
    return {"error": {"code": code, "message": message}}
