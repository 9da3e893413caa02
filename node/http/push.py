"""The `/api/v1/push` endpoints: the VAPID public key and the caller's push subscriptions."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from node import errors
from node.http.endpoints import RouteTable, no_content, reply
from node.http.keys import PUSH
from node.http.schemas import Body, IdOut, Out

routes = RouteTable()


class VapidPublicKey(Out):
    public_key: str = Field(
        description="URL-safe base64 of the uncompressed P-256 point: the `applicationServerKey`"
        " of `PushManager.subscribe`"
    )


class SubscriptionKeys(Body):
    p256dh: str = Field(min_length=1, max_length=256, description="URL-safe base64, 65 bytes")
    auth: str = Field(min_length=1, max_length=64, description="URL-safe base64, 16 bytes")


class PushSubscriptionIn(Body):
    """A browser `PushSubscription` as `JSON.stringify` writes it."""

    endpoint: str = Field(min_length=1, max_length=2048, description="an https URL")
    expirationTime: float | None = Field(  # the browser's own field name
        default=None, description="ignored (the browser's own; push services tell 404/410)"
    )
    keys: SubscriptionKeys


class PushSubscriptionCreated(Out):
    id: IdOut


@routes.get(
    "/api/v1/push/vapid-public-key",
    summary="The node's VAPID public key",
    response=VapidPublicKey,
)
async def vapid_public_key(request: web.Request, me: int) -> web.Response:
    """The same for every node of the cluster; subscribe with it."""
    return reply({"public_key": request.app[PUSH].public_key})


@routes.post(
    "/api/v1/push/subscriptions",
    summary="Subscribe a browser to pushes",
    response=PushSubscriptionCreated,
    status=201,
    errors=(errors.Unavailable,),
)
async def subscribe(request: web.Request, me: int, body: PushSubscriptionIn) -> web.Response:
    """While none of your devices is connected, a message for you sends each of your
    subscriptions a push naming the chat and the sender (at most one per few seconds). The
    endpoint must be `https` on an allowed push service (422 otherwise). The same endpoint again
    keeps its id (and moves to you if another user had it)."""
    sub_id = await request.app[PUSH].add(me, body.endpoint, body.keys.p256dh, body.keys.auth)
    return reply({"id": str(sub_id)}, status=201)


@routes.delete(
    "/api/v1/push/subscriptions/{id}",
    summary="Unsubscribe",
    response=None,
    status=204,
)
async def unsubscribe(request: web.Request, me: int, id: int) -> web.Response:
    """404 for a subscription that is not yours."""
    await request.app[PUSH].remove(me, id)
    return no_content()
