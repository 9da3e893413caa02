"""The `/api/v1/users` endpoints."""

from __future__ import annotations

from aiohttp import web

from node.http import schemas
from node.http.endpoints import RouteTable, reply
from node.http.keys import USERS

routes = RouteTable()


@routes.get("/api/v1/users/me", summary="The authenticated user", response=schemas.User)
async def get_me(request: web.Request, me: int) -> web.Response:
    user = await request.app[USERS].me(me)
    return reply(schemas.user_out(user))


@routes.get("/api/v1/users", summary="Search users by username prefix", response=schemas.UserList)
async def search_users(request: web.Request, me: int, query: schemas.UserSearch) -> web.Response:
    """Case-insensitive prefix match, alphabetical by username."""
    users = await request.app[USERS].search(query.q, query.limit)
    return reply({"items": [schemas.user_out(u) for u in users]})


@routes.get("/api/v1/users/{id}", summary="A user by id", response=schemas.User)
async def get_user(request: web.Request, me: int, id: int) -> web.Response:
    user = await request.app[USERS].get(id)
    return reply(schemas.user_out(user))
