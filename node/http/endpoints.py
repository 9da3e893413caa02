"""A declarative route table: each REST endpoint is declared once, next to its handler.

    routes = RouteTable()

    @routes.post("/api/v1/chats/{id}/members", response=schemas.Chat,
                 errors=(errors.Forbidden,), summary="Add a member to a group")
    async def add_member(
        request: web.Request, me: int, id: int, body: schemas.AddMember
    ) -> web.Response:
        ...

The handler's signature says what the endpoint takes, and the table does the taking:

- `me: int` — the endpoint needs a bearer token; the table authenticates and passes the user id;
- `body: SomeModel` — a JSON body parsed into that pydantic model (400 / 422 / 413);
- `query: SomeModel` — the query string parsed into that model (422);
- every other parameter is a `{name}` of the path: `int` for an id (not a bigint → 404), or
  `str` for a raw segment.

The decorator checks the signature against the path when the module is imported. The same
`Endpoint` records register the aiohttp routes (`register`) and feed the OpenAPI
generator (`node.http.openapi`), so the document is built from the very models the handlers use.
Errors the table itself can raise (401, 400/408/413/422, 404) are implied; `errors=` lists the
rest.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from node.errors import (
    ApiError,
    MalformedJson,
    NotFound,
    RequestTimeout,
    TooLarge,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from node.frames import dumps
from node.http.middleware import read_json, validate
from node.ids import id_or_none

Handler = Callable[..., Awaitable[web.StreamResponse]]
Authenticator = Callable[[web.Request], Awaitable[int]]
ErrorSpec = type[ApiError] | ApiError

_PATH_PARAM = re.compile(r"\{(\w+)\}")
_SPECIAL = ("request", "me", "body", "query")


def reply(data: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with `node.frames.dumps` (times as RFC 3339 UTC with `Z`)."""
    return web.Response(status=status, body=dumps(data), content_type="application/json")


def no_content() -> web.Response:
    return web.Response(status=204)


def path_id(raw: str) -> int:
    """A path segment as an id; anything that cannot be one is simply not found."""
    ident = id_or_none(raw)
    if ident is None:
        raise NotFound()
    return ident


@dataclass(slots=True, frozen=True)
class Endpoint:
    """One REST operation: how to call its handler and how to document it."""

    method: str
    path: str
    handler: Handler
    summary: str
    status: int
    response: type[BaseModel] | None  # None: no body (e.g. 204)
    also: Mapping[int, str]  # other success statuses with the same body, and when
    errors: tuple[ErrorSpec, ...]
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    path_params: Mapping[str, type]  # name -> int (an id) or str
    auth: bool
    tag: str
    # merged into the generated operation (one level deep: `responses` entries are added or
    # replaced one by one), e.g. a raw request body or a binary response
    openapi: Mapping[str, Any] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def description(self) -> str:
        return inspect.getdoc(self.handler) or ""

    def error_specs(self) -> list[ApiError]:
        """Every error the endpoint may answer: the implied ones, then the declared ones."""
        implied: list[ApiError] = []
        if self.auth:
            implied += [
                Unauthorized(),
                Unauthorized(code="invalid_token"),
                Unauthorized(code="token_expired"),
                Unavailable("the database cannot be reached"),  # checking the token's user
            ]
        if self.path_params:
            implied.append(NotFound())
        if self.body is not None:
            implied += [MalformedJson(), RequestTimeout(), TooLarge(), ValidationFailed()]
        elif self.query is not None:
            implied.append(ValidationFailed())
        declared = [e if isinstance(e, ApiError) else e() for e in self.errors]
        return implied + declared

    async def call(self, authenticate: Authenticator, request: web.Request) -> web.StreamResponse:
        """Authenticate, parse path, query and body (in that order), then run the handler."""
        kwargs: dict[str, Any] = {}
        if self.auth:
            kwargs["me"] = await authenticate(request)
        for name, kind in self.path_params.items():
            raw = request.match_info[name]
            kwargs[name] = path_id(raw) if kind is int else raw
        if self.query is not None:
            kwargs["query"] = validate(self.query, dict(request.query))
        if self.body is not None:
            kwargs["body"] = await read_json(request, self.body)
        return await self.handler(request, **kwargs)


class RouteTable:
    """The endpoints of one handler module, in declaration order."""

    def __init__(self) -> None:
        self._endpoints: list[Endpoint] = []

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._endpoints)

    def get(self, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **spec)

    def post(self, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **spec)

    def delete(self, path: str, **spec: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **spec)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        response: type[BaseModel] | None,
        status: int = 200,
        also: Mapping[int, str] | None = None,
        errors: tuple[ErrorSpec, ...] = (),
        tag: str | None = None,
        openapi: Mapping[str, Any] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare `handler` as the endpoint `method path`; returns the handler unchanged."""

        def declare(handler: Handler) -> Handler:
            hints = typing.get_type_hints(handler)
            params = [p for p in inspect.signature(handler).parameters if p != "request"]
            path_params = tuple(p for p in params if p not in _SPECIAL)
            if set(path_params) != set(_PATH_PARAM.findall(path)):
                raise TypeError(f"{handler.__name__}: parameters {params} do not match {path}")
            if "me" in params and hints.get("me") is not int:
                raise TypeError(f"{handler.__name__}: me must be an int (the user id)")
            for name in path_params:
                if hints.get(name) not in (int, str):
                    raise TypeError(f"{handler.__name__}: {name} must be int (an id) or str")
            for name in ("body", "query"):
                if name in params and not issubclass(hints.get(name, object), BaseModel):
                    raise TypeError(f"{handler.__name__}: {name} must be a pydantic model")
            self._endpoints.append(
                Endpoint(
                    method=method,
                    path=path,
                    handler=handler,
                    summary=summary,
                    status=status,
                    response=response,
                    also=dict(also or {}),
                    errors=errors,
                    body=hints["body"] if "body" in params else None,
                    query=hints["query"] if "query" in params else None,
                    path_params={name: hints[name] for name in path_params},
                    auth="me" in params,
                    tag=tag or _tag_of(path),
                    openapi=dict(openapi or {}),
                )
            )
            return handler

        return declare


def register(
    app: web.Application, endpoints: Iterable[Endpoint], authenticate: Authenticator
) -> None:
    """Add `endpoints` to `app`'s router; authenticated ones use `authenticate`."""
    for endpoint in endpoints:

        async def handle(request: web.Request, endpoint: Endpoint = endpoint) -> web.StreamResponse:
            return await endpoint.call(authenticate, request)

        app.router.add_route(endpoint.method, endpoint.path, handle)


def _tag_of(path: str) -> str:
    """The tag of an operation: the first path segment after `/api/v1`."""
    parts = path.removeprefix("/api/v1/").strip("/").split("/")
    return parts[0] or "node"
