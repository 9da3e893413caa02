"""The `/api/v1/chats` endpoints (messages are in `node.http.messages`)."""

from __future__ import annotations

from aiohttp import web

from node import errors
from node.http import schemas
from node.http.endpoints import RouteTable, no_content, reply
from node.http.keys import CHATS

routes = RouteTable()


@routes.post(
    "/api/v1/chats",
    summary="Create a direct chat or a group",
    response=schemas.Chat,
    status=201,
    also={200: "a direct chat with this user already exists: that chat"},
    errors=(errors.NotFound("no such user"),),
)
async def create_chat(request: web.Request, me: int, body: schemas.CreateChat) -> web.Response:
    """At most one direct chat exists per pair of users. A direct chat with yourself is 422.
    The group's creator is its owner and a member without being listed in `member_ids`."""
    chats = request.app[CHATS]
    spec = body.root
    if isinstance(spec, schemas.CreateDirectChat):
        view, created = await chats.create_direct(me, spec.user_id)
    else:
        view, created = await chats.create_group(me, spec.title, spec.member_ids), True
    return reply(schemas.chat_out(view), status=201 if created else 200)


@routes.get(
    "/api/v1/chats", summary="Your chats, most recent activity first", response=schemas.ChatList
)
async def list_chats(request: web.Request, me: int) -> web.Response:
    views = await request.app[CHATS].list_for(me)
    return reply({"items": [schemas.chat_out(v) for v in views]})


@routes.get(
    "/api/v1/chats/{id}",
    summary="A chat with its members",
    response=schemas.Chat,
    errors=(errors.NotMember,),
)
async def get_chat(request: web.Request, me: int, id: int) -> web.Response:
    """404 unless you are a member, whether or not the chat exists."""
    view = await request.app[CHATS].get(me, id)
    return reply(schemas.chat_out(view))


@routes.post(
    "/api/v1/chats/{id}/members",
    summary="Add a member to a group",
    response=schemas.Chat,
    errors=(errors.NotMember, errors.Forbidden, errors.NotFound("no such user")),
)
async def add_member(
    request: web.Request, me: int, id: int, body: schemas.AddMember
) -> web.Response:
    """Group owner only; direct chats have no member changes (403). Adding an existing member
    changes nothing. The new member receives messages from now on; older history stays readable
    over REST."""
    view = await request.app[CHATS].add_member(me, id, body.user_id)
    return reply(schemas.chat_out(view))


@routes.delete(
    "/api/v1/chats/{id}/members/{user_id}",
    summary="Remove a member from a group, or leave it",
    response=None,
    status=204,
    errors=(errors.NotMember, errors.Forbidden, errors.NotFound("no such member")),
)
async def remove_member(request: web.Request, me: int, id: int, user_id: int) -> web.Response:
    """Anyone may remove themselves; the owner may remove anyone (an owner who leaves hands the
    group to its longest-standing member). 404 when that user is not a member."""
    await request.app[CHATS].remove_member(me, id, user_id)
    return no_content()
