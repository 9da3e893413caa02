"""`GET /healthz`: can this node serve?"""

from __future__ import annotations

from aiohttp import web

from node.http import schemas
from node.http.endpoints import RouteTable, reply
from node.http.keys import HEALTH

routes = RouteTable()


@routes.get(
    "/healthz",
    summary="Whether this node can serve (PostgreSQL and Redis reachable)",
    response=schemas.Health,
    also={503: "a dependency is unreachable; `failing` names it"},
    tag="node",
)
async def healthz(request: web.Request) -> web.Response:
    healthy, body = await request.app[HEALTH].check()
    return reply(body, status=200 if healthy else 503)
