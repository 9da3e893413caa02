"""Bearer-token authentication of requests, and the `/api/v1/auth/*` endpoints."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from node import errors
from node.config import IPNetwork
from node.http import schemas
from node.http.endpoints import RouteTable, no_content, reply
from node.http.keys import AUTH, SETTINGS

routes = RouteTable()


def bearer_token(request: web.Request, *, query: bool = False) -> str | None:
    """The access token of `Authorization: Bearer <token>`; with `query`, else of `?token=`
    (browsers cannot set headers on a WebSocket: the contract allows it there only). None when
    there is none."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthorized("expected Authorization: Bearer <access_token>")
        return token.strip()
    return (request.query.get("token") or None) if query else None


def client_address(request: web.Request) -> str:
    """Who is asking, for throttling: the peer's IP address, or, when the peer is a trusted
    reverse proxy (`settings.trusted_proxies`), the nearest address in `X-Forwarded-For` that is
    not one. An IPv6 client counts by its /64 (one host or home usually gets it whole)."""
    ip = _ip(request.remote)
    if ip is None:
        return request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_networks
    if trusted and _within(ip, trusted):
        for hop in reversed(request.headers.get("X-Forwarded-For", "").split(",")):
            forwarded = _ip(hop.strip())
            if forwarded is None:
                break
            ip = forwarded
            if not _within(ip, trusted):
                break
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return None


def _within(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: tuple[IPNetwork, ...]
) -> bool:
    return any(ip in network for network in networks)


async def authenticate(request: web.Request) -> int:
    """The user id of a REST request's bearer token; 401 when it is missing or not valid
    (`invalid_token`, `token_expired`, or a token whose user does not exist)."""
    return await _user_of(request, bearer_token(request))


async def authenticate_socket(request: web.Request) -> int:
    """As `authenticate`, for the WebSocket upgrade: the token may come as `?token=` too."""
    return await _user_of(request, bearer_token(request, query=True))


async def _user_of(request: web.Request, token: str | None) -> int:
    if token is None:
        raise errors.Unauthorized("an access token is required")
    return await request.app[AUTH].authenticate(token)


@routes.post(
    "/api/v1/auth/register",
    summary="Create an account",
    response=schemas.Registered,
    status=201,
    errors=(errors.UsernameTaken, errors.RateLimited, errors.Unavailable),
)
async def register(request: web.Request, body: schemas.Register) -> web.Response:
    """Usernames are unique regardless of case. Registering does not log in."""
    user = await request.app[AUTH].register(body.username, body.password, client_address(request))
    return reply({"user": schemas.user_out(user)}, status=201)


@routes.post(
    "/api/v1/auth/login",
    summary="Log in: get an access and a refresh token",
    response=schemas.Tokens,
    errors=(errors.InvalidCredentials, errors.RateLimited, errors.Unavailable),
)
async def login(request: web.Request, body: schemas.Login) -> web.Response:
    """Each login starts a new refresh-token family (one per device or session)."""
    tokens = await request.app[AUTH].login(body.username, body.password, client_address(request))
    return reply(schemas.tokens_out(tokens))


@routes.post(
    "/api/v1/auth/refresh",
    summary="Trade a refresh token for new tokens",
    response=schemas.Tokens,
    errors=(errors.InvalidRefreshToken,),
)
async def refresh(request: web.Request, body: schemas.RefreshToken) -> web.Response:
    """Rotation: the presented refresh token is spent. Presenting a spent one again answers
    401 and revokes its whole family (it must have leaked)."""
    tokens = await request.app[AUTH].refresh(body.refresh_token)
    return reply(schemas.tokens_out(tokens))


@routes.post(
    "/api/v1/auth/logout",
    summary="Revoke a refresh token's family",
    response=None,
    status=204,
)
async def logout(request: web.Request, me: int, body: schemas.RefreshToken) -> web.Response:
    """204 whatever the refresh token (unknown, spent or someone else's change nothing).
    Access tokens already issued stay valid until they expire."""
    await request.app[AUTH].logout(me, body.refresh_token)
    return no_content()
