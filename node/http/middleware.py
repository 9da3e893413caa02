"""The one place where failures become HTTP error responses, and the JSON body reader.

Every error leaves the node as `{"error": {"code", "message"}}`: an `ApiError` with its own status
and code, one of aiohttp's HTTP exceptions (unknown route, wrong method, body over
`client_max_size`, ...) with a code derived from its status, and anything else as a bare 500
`internal_error` whose details go to the log only. No stack trace or SQL is ever sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from http import HTTPStatus
from typing import TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, RootModel, ValidationError

from node import errors
from node.frames import dumps
from node.http.keys import SETTINGS
from node.http.schemas import error_out

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Handler)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}
_MESSAGES = {
    400: "malformed HTTP request",
    404: "no such resource",
    405: "method not allowed",
    413: "the body is too large",
}


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=dumps(error_out(code, message)), content_type="application/json"
    )


def error_for_status(status: int, reason: str | None = None) -> web.Response:
    """The contract's error for a bare HTTP status (aiohttp's own refusals): a code derived from
    the status, a fixed message, never anything taken from the request."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    message = _MESSAGES.get(status, reason or phrase)
    return error_response(status, _CODES.get(status, "http_error"), message)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


# Handlers that render their own failures through `failure_response` (the WebSocket's): the
# middleware hands their coroutine on as it is, so no frame of the middleware stays suspended on
# the stack of a handler that lives as long as its socket.
_OWN_ERRORS: set[Handler] = set()


def renders_own_errors(handler: H) -> H:
    """Mark a long-lived handler that catches its own failures and answers them with
    `failure_response`: the error middleware does not wrap it."""
    _OWN_ERRORS.add(handler)
    return handler


@web.middleware
def error_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Render every failure of `handler` in the contract's error shape."""
    if handler in _OWN_ERRORS:
        return handler(request)
    return _guarded(request, handler)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:  # CancelledError is not an Exception: it goes on up
        return failure_response(request, exc)


def failure_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The contract's answer to a handler's failure (an HTTP exception below 400 is re-raised):
    an `ApiError` with its status and code, an aiohttp HTTP error with a code derived from its
    status, anything else a bare 500 `internal_error` whose details go to the log only."""
    if isinstance(exc, errors.ApiError):
        response = error_response(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:  # redirects and the like are not errors
            raise exc
        response = error_for_status(exc.status, exc.reason)
        if "Allow" in exc.headers:  # 405 names the allowed methods
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    if isinstance(exc, ConnectionError) and _client_gone(request):
        # the client went away mid-request (e.g. while sending its body): nobody to answer,
        # nothing wrong with the node; the answer below is dropped with the connection
        log.debug("http.client_gone", extra={"method": request.method, "path": request.path})
        return error_response(400, "client_gone", "the connection was lost")
    # the path only: the query string may hold an access token (`?token=` of the WebSocket)
    log.error(
        "http.unhandled", extra={"method": request.method, "path": request.path}, exc_info=exc
    )
    return error_response(500, "internal_error", "internal error")


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def validation_message(exc: ValidationError, *, drop_tag: bool = False) -> str:
    """A short human message from the first error: where and what, never the input itself
    (it may be a password). `drop_tag` leaves out the tag a discriminated union puts first."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    loc = list(first["loc"])
    if drop_tag and len(loc) > 1:
        loc = loc[1:]
    msg = first["msg"].removeprefix("Value error, ")
    where = ".".join(str(part) for part in loc)
    return f"{where}: {msg}" if where else msg


def validate(model: type[M], data: object) -> M:
    """`data` as `model`; 422 `validation_error` otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message = validation_message(exc, drop_tag=issubclass(model, RootModel))
        raise errors.ValidationFailed(message) from None


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`. A missing or non-JSON `Content-Type`, or a body that
    is not JSON, is 400 `malformed_json`; JSON that breaks the model is 422 `validation_error`;
    a body over the app's `client_max_size` is 413 (raised by aiohttp, mapped above); a body not
    complete within `settings.body_timeout` is 408 `request_timeout` (and the connection is
    closed after at most `node.http.protocol.LINGERING_TIME` more)."""
    if not _is_json(request.content_type):
        raise errors.MalformedJson("expected Content-Type: application/json")
    try:
        async with asyncio.timeout(request.app[SETTINGS].body_timeout):
            raw = await request.read()
    except TimeoutError:
        raise errors.RequestTimeout() from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.MalformedJson() from None
    return validate(model, data)
