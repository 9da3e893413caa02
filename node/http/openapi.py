"""The OpenAPI 3.1 document, generated from the route table (browsed at `/docs`: node.http.docs).

Every schema comes from the pydantic models the handlers use (`node.http.schemas`) through
`models_json_schema`, so documented and enforced shapes are the same objects. Request bodies use
the models' validation schema, responses their serialization schema. The WebSocket endpoint is not
in the table (it is not a JSON request/response); it is documented here as an operation answering
101, with its frames described in prose.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from node.http.endpoints import Endpoint
from node.http.schemas import ErrorBody
from node.ids import ID_PATTERN

REF_TEMPLATE = "#/components/schemas/{model}"
WS_PATH = "/api/v1/ws"
_PATH_ID = {"type": "string", "pattern": ID_PATTERN}
_SOFT_BREAK = re.compile(r"(?<!\n)\n(?!\n)")

_WS_DESCRIPTION = """\
Upgrade to a WebSocket. The access token comes in `Authorization: Bearer …` or, for browsers,
as `?token=`; a bad token is refused before the upgrade with 401. Frames are JSON text, one object
each, with a `type`. Ids are strings, `seq` an integer.

**Server → client**

| frame | when |
| --- | --- |
| `{"type":"ready","user_id","device_id","node_id"}` | first frame of every connection |
| `{"type":"message","message":Message}` | backlog (unacked, oldest first per chat), then live |
| `{"type":"sent","client_msg_id","message":Message}` | your `send` is durably stored |
| `{"type":"typing","chat_id","user_id"}` | someone types (ephemeral) |
| `{"type":"read","chat_id","user_id","seq"}` | someone read up to `seq` |
| `{"type":"presence","user_id","online"}` | someone sharing a chat came online / went offline |
| `{"type":"error","code","message","ref"?}` | a frame was refused (`ref`: its `client_msg_id`) |
| `{"type":"gap","chat_id","after_seq","before_seq"}` | backlog cut: read the range over REST |
| `{"type":"pong"}` | answer to `ping` |

**Client → server**

| frame | meaning |
| --- | --- |
| `{"type":"send","chat_id","client_msg_id","text","attachments"?}` | send, idempotent as REST |
| `{"type":"ack","chat_id","seq"}` | this device has the chat up to `seq`; never sent again |
| `{"type":"typing","chat_id"}` | I am typing |
| `{"type":"read","chat_id","seq"}` | I have read up to `seq` |
| `{"type":"ping"}` | liveness |

Every confirmed message reaches every device of every member, in `seq` order per chat, until that
device acks it, across reconnects and node restarts; clients drop a `(chat_id, seq)` already seen.
"""


def _version() -> str:
    try:
        return metadata.version("messenger-node")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _error_content() -> dict[str, Any]:
    ref = REF_TEMPLATE.format(model=ErrorBody.__name__)
    return {"application/json": {"schema": {"$ref": ref}}}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_DOC_KEYS = ("title", "description")


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or has a value, never null: `X | None = None` becomes X."""
    options = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(options) == 1:
        schema = {k: v for k, v in schema.items() if k != "anyOf"} | options[0]
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    return schema


def _path_schema(kind: type) -> dict[str, Any]:
    return _PATH_ID if kind is int else {"type": "string"}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            param["description"] = prop["description"]
        param["schema"] = _non_null({k: v for k, v in prop.items() if k not in _DOC_KEYS})
        params.append(param)
    return params


def _operation(e: Endpoint, refs: Mapping[Any, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": e.operation_id,
        "summary": e.summary,
        "tags": [e.tag],
        "security": [{"bearer": []}] if e.auth else [],
    }
    if e.description:  # docstrings are hard-wrapped: keep paragraphs, join their lines
        op["description"] = _SOFT_BREAK.sub(" ", e.description)
    params = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(kind)}
        for name, kind in e.path_params.items()
    ]
    if e.query is not None:
        params += _query_parameters(e.query)
    if params:
        op["parameters"] = params
    if e.body is not None:
        op["requestBody"] = {"required": True, "content": _json_content(refs[e.body, "validation"])}
    responses: dict[str, Any] = {}
    for status, description in {e.status: "success", **e.also}.items():
        responses[str(status)] = {"description": description}
        if e.response is not None:
            responses[str(status)]["content"] = _json_content(refs[e.response, "serialization"])
    by_status: dict[int, list[str]] = defaultdict(list)
    for error in e.error_specs():
        if error.code not in by_status[error.status]:
            by_status[error.status].append(error.code)
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "error codes: " + ", ".join(f"`{c}`" for c in codes),
            "content": _error_content(),
        }
    op["responses"] = responses
    for key, value in e.openapi.items():
        if isinstance(value, dict) and isinstance(op.get(key), dict):
            op[key] = {**op[key], **value}
        else:
            op[key] = value
    return op


def _websocket_operation() -> dict[str, Any]:
    return {
        "operationId": "websocket",
        "summary": "Real-time delivery over a WebSocket",
        "tags": ["realtime"],
        "description": _WS_DESCRIPTION,
        "security": [{"bearer": []}, {"token_query": []}],
        "parameters": [
            {
                "name": "device_id",
                "in": "query",
                "required": False,
                "description": "one installation of a client; each has its own delivery cursor",
                "schema": {"type": "string", "default": "default", "minLength": 1},
            },
            {
                "name": "token",
                "in": "query",
                "required": False,
                "description": "the access token, for browsers (which cannot set headers here)",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "101": {"description": "Switching Protocols: frames as described above"},
            "400": {
                "description": "error codes: `upgrade_required` (not a WebSocket upgrade)",
                "content": _error_content(),
            },
            "401": {
                "description": "error codes: `unauthorized`, `invalid_token`, `token_expired`",
                "content": _error_content(),
            },
            "422": {
                "description": "error codes: `validation_error` (a bad `device_id`)",
                "content": _error_content(),
            },
            "503": {
                "description": "error codes: `unavailable` (the node is shutting down)",
                "content": _error_content(),
            },
        },
    }


def build_openapi(
    endpoints: Iterable[Endpoint], *, title: str = "Messenger node"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints` plus the WebSocket endpoint."""
    endpoints = list(endpoints)
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for e in endpoints:
        if e.body is not None:
            wanted.append((e.body, "validation"))
        if e.response is not None:
            wanted.append((e.response, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for e in endpoints:
        paths[e.path][e.method.lower()] = _operation(e, refs)
    paths[WS_PATH]["get"] = _websocket_operation()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": _version(),
            "description": "REST and WebSocket interface of a messenger node. Ids are strings; "
            "times are RFC 3339 UTC. Every error is "
            '`{"error":{"code":"snake_case_code","message":"human text"}}`.',
        },
        "paths": dict(paths),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "token_query": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }
