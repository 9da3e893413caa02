"""`GET /api/v1/ws`: the WebSocket edge.

The handler authenticates before the upgrade (401 otherwise), opens a device session (which
writes to the socket, with a task of its own only while it has something queued), and reads
frames: each is validated and handed to one service call. A refused frame is answered with an
`error` frame and the connection stays open.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import WSCloseCode, WSMsgType, web

from node import errors, frames
from node.http.auth import authenticate_socket
from node.http.keys import DEVICES, MESSAGES, PRESENCE, SETTINGS
from node.http.middleware import failure_response, renders_own_errors
from node.http.ws.reader import FrameReader

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 2.0
_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@renders_own_errors
async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """Its failures are answered here, in one frame (`failure_response`, as the error middleware
    would): the middleware does not wrap this handler, so no frame of its own stays suspended
    under every open socket."""
    try:
        user_id = await authenticate_socket(request)
        device_id = request.query.get("device_id", "default")
        if not _DEVICE_ID.fullmatch(device_id):
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
        reader = FrameReader(
            session,
            request.app[MESSAGES],
            request.app[PRESENCE],
            settings.max_frame_bytes,
            settings.signal_interval,
        )
        try:
            await ws.prepare(request)
            session.start()
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await reader.handle(message.data)
                elif message.type == WSMsgType.BINARY:
                    session.offer_frame(frames.error_frame("invalid_frame", "frames are JSON text"))
        finally:
            hub.close(session)
            try:
                await reader.close()  # the read marks still held go out (bounded)
            finally:
                writer = session.writer  # the close, or what was queued before it
                if writer is not None:
                    await _stop_writer(writer, user_id)
                if not ws.closed and ws.prepared:
                    await ws.close(code=WSCloseCode.INTERNAL_ERROR)
        return ws
    except Exception as exc:  # CancelledError is not an Exception: it goes on up
        return failure_response(request, exc)


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
