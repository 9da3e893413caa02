"""`GET /api/v1/ws`: the WebSocket edge.

The handler authenticates before the upgrade (401 otherwise), opens a device session whose writer
task it owns, and reads frames: each is validated and handed to one service call. A refused frame
is answered with an `error` frame and the connection stays open.
"""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from node import errors, frames, tracing
from node.actors.chat import SendOutcome
from node.actors.session import DeviceSession
from node.http.auth import authenticate
from node.http.keys import DEVICES, MESSAGES, SETTINGS
from node.http.ws_schemas import (
    CLIENT_FRAME,
    AckFrame,
    PingFrame,
    ReadFrame,
    SendFrame,
    TypingFrame,
)
from node.services.messages import MessageService

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 2.0
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_WS_CODES = {
    "conflict": "idempotency_conflict",
    "not_found": "not_member",
    "not_member": "not_member",
    "rate_limited": "rate_limited",
}


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    user_id = await authenticate(request)
    device_id = request.query.get("device_id", "default")
    if not _DEVICE_ID.match(device_id):
        raise errors.ValidationFailed("device_id: 1-64 of [A-Za-z0-9_.:-]")
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat,
        max_msg_size=settings.max_frame_bytes * 4,
        timeout=_CLOSE_TIMEOUT,  # how long a close waits for the client's close frame
        compress=False,  # frames are small JSON: per-socket zlib state would cost far more
    )
    if not ws.can_prepare(request).ok:
        raise errors.BadRequest("expected a WebSocket upgrade", code="upgrade_required")
    hub = request.app[DEVICES]
    session = await hub.open(user_id, device_id, ws, request.transport)
    writer: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        writer = asyncio.get_running_loop().create_task(session.run(), name=f"ws-writer:{user_id}")
        reader = FrameReader(session, request.app[MESSAGES], settings.max_frame_bytes)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await reader.handle(message.data)
            elif message.type == WSMsgType.BINARY:
                session.offer_frame(frames.error_frame("invalid_frame", "frames are JSON text"))
    finally:
        hub.close(session)
        if writer is not None:
            await _stop_writer(writer, user_id)
        if not ws.closed and ws.prepared:
            await ws.close(code=WSCloseCode.INTERNAL_ERROR)
    return ws


async def _stop_writer(writer: asyncio.Task[None], user_id: int) -> None:
    """The session is closed: its writer finishes the close handshake (bounded) and ends."""
    try:
        await asyncio.wait_for(writer, 5.0)
    except TimeoutError:
        writer.cancel()
    except asyncio.CancelledError:
        writer.cancel()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the handler itself is being cancelled: not ours to swallow
    except Exception:
        log.exception("ws.writer_failed", extra={"user_id": user_id})


class FrameReader:
    """Validates one client frame and makes one service call for it."""

    def __init__(self, session: DeviceSession, messages: MessageService, max_bytes: int) -> None:
        self._session = session
        self._messages = messages
        self._max_bytes = max_bytes

    async def handle(self, data: str) -> None:
        """One frame, as the root span of its own trace when tracing is on."""
        if not tracing.enabled():
            await self._handle(data)
            return
        with tracing.span(
            "ws.frame", root=True, kind=SpanKind.SERVER, user_id=self._session.user_id
        ):
            await self._handle(data)

    async def _handle(self, data: str) -> None:
        session = self._session
        ref: str | None = None
        try:
            if len(data) > self._max_bytes and len(data.encode()) > self._max_bytes:
                ref = _client_msg_id(data)
                raise errors.TooLarge(f"frames are limited to {self._max_bytes} bytes")
            try:
                frame = CLIENT_FRAME.validate_json(data)
            except ValidationError as exc:
                ref = _client_msg_id(data)
                raise errors.ValidationFailed(_describe(exc), code="invalid_frame") from None
            if isinstance(frame, SendFrame):
                ref = frame.client_msg_id
                await self._messages.submit(
                    session.user_id,
                    frame.chat_id,
                    frame.client_msg_id,
                    frame.text,
                    frame.attachments,
                    self._reply_to(frame.client_msg_id),
                )
            elif isinstance(frame, AckFrame):
                await session.ack(frame.chat_id, frame.seq)
            elif isinstance(frame, PingFrame):
                session.offer_frame(frames.PONG_FRAME)
            elif isinstance(frame, TypingFrame):
                await self._messages.typing(session.user_id, session.device_id, frame.chat_id)
            elif isinstance(frame, ReadFrame):
                await self._messages.mark_read(
                    session.user_id, session.device_id, frame.chat_id, frame.seq
                )
        except errors.ApiError as exc:
            session.offer_frame(frames.error_frame(exc.code, exc.message, ref))
        except Exception:
            log.exception("ws.frame_failed", extra={"user_id": session.user_id})
            session.offer_frame(frames.error_frame("internal_error", "internal error", ref))

    def _reply_to(self, client_msg_id: str) -> _Reply:
        return _Reply(self._session, client_msg_id)


class _Reply:
    """Turns a send's outcome into a `sent` or `error` frame on the sending device."""

    __slots__ = ("_client_msg_id", "_session")

    def __init__(self, session: DeviceSession, client_msg_id: str) -> None:
        self._session = session
        self._client_msg_id = client_msg_id

    def __call__(self, outcome: SendOutcome) -> None:
        if outcome.message_json is not None and outcome.status in ("created", "duplicate"):
            self._session.offer_frame(
                frames.sent_frame_from(self._client_msg_id, outcome.message_json)
            )
            return
        code = _WS_CODES.get(outcome.status, "unavailable")
        text = (
            "you are not a member of this chat" if code == "not_member" else code.replace("_", " ")
        )
        self._session.offer_frame(frames.error_frame(code, text, self._client_msg_id))


def _client_msg_id(data: str) -> str | None:
    try:
        value = orjson.loads(data).get("client_msg_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and len(value) <= 64 else None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return "the frame is not valid JSON"
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
