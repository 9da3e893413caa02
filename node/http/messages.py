"""Sending and reading messages over REST: `/api/v1/chats/{id}/messages`."""

from __future__ import annotations

from aiohttp import web

from node import errors
from node.frames import message_dict
from node.http import schemas
from node.http.endpoints import RouteTable, reply
from node.http.keys import MESSAGES

routes = RouteTable()


@routes.post(
    "/api/v1/chats/{id}/messages",
    summary="Send a message",
    tag="messages",
    response=schemas.Message,
    status=201,
    also={200: "this client_msg_id was already sent to this chat: the original message"},
    errors=(
        errors.NotMember,
        errors.IdempotencyConflict,
        errors.UnknownMedia,
        errors.RateLimited,
        errors.Unavailable,
        errors.InternalError,
    ),
)
async def send_message(
    request: web.Request, me: int, id: int, body: schemas.SendMessage
) -> web.Response:
    """Stored durably before the answer. `client_msg_id` is unique per sender across all chats:
    a repeat returns the original message whatever its text; a repeat naming another chat is
    409 `idempotency_conflict`. `attachments` name your own uploads (else 422 `unknown_media`);
    with attachments the text may be empty."""
    message, created = await request.app[MESSAGES].send(
        me, id, body.client_msg_id, body.text, body.attachments
    )
    return reply(message_dict(message), status=201 if created else 200)


@routes.get(
    "/api/v1/chats/{id}/messages",
    summary="A page of a chat's history",
    tag="messages",
    response=schemas.MessageList,
    errors=(errors.NotMember,),
)
async def list_messages(
    request: web.Request, me: int, id: int, query: schemas.HistoryPage
) -> web.Response:
    """Ascending by `seq`. With `after_seq`: the first `limit` messages above it (and below
    `before_seq` if given). Otherwise the newest `limit` messages below `before_seq`, or the
    newest of all."""
    history = await request.app[MESSAGES].history(
        me, id, after_seq=query.after_seq, before_seq=query.before_seq, limit=query.limit
    )
    return reply({"items": [message_dict(m) for m in history]})
