"""Every route of the node, in one list.

REST endpoints are declared next to their handlers (`node.http.endpoints.RouteTable`); `ENDPOINTS`
gathers them, and the same list feeds the router and the OpenAPI document. To add a module's
endpoints, add its `routes` here.
"""

from __future__ import annotations

from aiohttp import web

from node import metrics
from node.frames import dumps
from node.http import auth, chats, docs, health, media, messages, push, users
from node.http.endpoints import Endpoint, register
from node.http.openapi import WS_PATH, build_openapi
from node.http.ws.handler import websocket_handler
from node.web import setup_web_client

ENDPOINTS: tuple[Endpoint, ...] = (
    *health.routes,
    *auth.routes,
    *users.routes,
    *chats.routes,
    *messages.routes,
    *push.routes,
    *media.routes,
)

OPENAPI_PATH = "/api/v1/openapi.json"


def setup_routes(app: web.Application) -> None:
    """Register the REST endpoints, the OpenAPI document and `/docs`, the WebSocket, and the web
    client at `/`."""
    register(app, ENDPOINTS, auth.authenticate)

    document = dumps(build_openapi(ENDPOINTS))  # built once: it depends on code only

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    async def prometheus(request: web.Request) -> web.Response:
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get(OPENAPI_PATH, openapi_json)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/docs", docs.page)  # Swagger UI, from this node's own files
    app.router.add_get(docs.PREFIX + "{name}", docs.asset)

    app.router.add_get(WS_PATH, websocket_handler)
    setup_web_client(app)
