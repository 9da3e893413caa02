"""The reading side of a WebSocket: each client frame validated and turned into one service call.

A refused frame is answered with an `error` frame (`ref` echoes its client_msg_id where it had
one) and the connection stays open. A send's outcome comes back later, from wherever the chat's
actor runs, as a `sent` or `error` frame; failures are spelled by `node.errors.send_failure`, the
same mapping the REST edge uses.
"""

from __future__ import annotations

import logging

import orjson
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from node import errors, frames, tracing
from node.actors.commands import SendOutcome
from node.http.ws.schemas import (
    CLIENT_FRAME,
    AckFrame,
    PingFrame,
    PlainSend,
    PresenceQueryFrame,
    ReadFrame,
    SendFrame,
    TypingFrame,
    parse_common,
)
from node.http.ws.session import DeviceSession
from node.http.ws.signals import ReadFlusher, SignalThrottle
from node.services.messages import MessageService
from node.services.presence import PresenceService

log = logging.getLogger(__name__)


class FrameReader:
    """Validates one client frame and makes one service call for it. One per connection, kept
    small: the typing/read throttle and its flusher are made with the first such frame (most
    connections sit idle and never send one)."""

    __slots__ = (
        "_max_bytes",
        "_messages",
        "_presence",
        "_reads",
        "_session",
        "_signal_interval",
        "_signals",
    )

    def __init__(
        self,
        session: DeviceSession,
        messages: MessageService,
        presence: PresenceService,
        max_bytes: int,
        signal_interval: float,
    ) -> None:
        self._session = session
        self._messages = messages
        self._presence = presence
        self._max_bytes = max_bytes
        self._signal_interval = signal_interval
        self._signals: SignalThrottle | None = None
        self._reads: ReadFlusher | None = None

    def _throttle(self) -> tuple[SignalThrottle, ReadFlusher]:
        """The connection's typing/read throttle and read flusher, made on first use."""
        signals, reads = self._signals, self._reads
        if signals is None or reads is None:
            signals = self._signals = SignalThrottle(self._signal_interval)
            reads = self._reads = ReadFlusher(signals, self._send_read)
        return signals, reads

    async def close(self) -> None:
        """The connection is over: send the read marks still held (bounded), then stop."""
        if self._reads is not None:
            await self._reads.close()

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
            common = parse_common(data)  # the frames sent most, without the models
            if isinstance(common, PlainSend):
                ref = common.client_msg_id
                await self._submit(common)
                return
            if common is not None:
                kind, chat_id, seq = common
                if kind == "ack":
                    await session.ack(chat_id, seq)
                elif kind == "read":
                    await self._read(chat_id, seq)
                else:
                    await self._typing(chat_id)
                return
            try:
                frame = CLIENT_FRAME.validate_json(data)
            except ValidationError as exc:
                ref = _client_msg_id(data)
                raise errors.ValidationFailed(_describe(exc), code="invalid_frame") from None
            if isinstance(frame, SendFrame):
                ref = frame.client_msg_id
                await self._submit(frame)
            elif isinstance(frame, AckFrame):
                await session.ack(frame.chat_id, frame.seq)
            elif isinstance(frame, PingFrame):
                session.offer_frame(frames.PONG_FRAME)
            elif isinstance(frame, TypingFrame):
                await self._typing(frame.chat_id)
            elif isinstance(frame, ReadFrame):
                await self._read(frame.chat_id, frame.seq)
            elif isinstance(frame, PresenceQueryFrame):
                answer = await self._presence.query(session.user_id, frame.user_ids)
                session.offer_frame(frames.presence_batch_frame(answer, listed=True))
        except errors.ApiError as exc:
            session.offer_frame(frames.error_frame(exc.code, exc.message, ref))
        except Exception:
            log.exception("ws.frame_failed", extra={"user_id": session.user_id})
            session.offer_frame(frames.error_frame("internal_error", "internal error", ref))

    async def _submit(self, send: PlainSend | SendFrame) -> None:
        """A `send`, from the fast path or the models alike."""
        await self._messages.submit(
            self._session.user_id,
            send.chat_id,
            send.client_msg_id,
            send.text,
            send.attachments,
            self._reply_to(send.client_msg_id),
        )

    async def _typing(self, chat_id: int) -> None:
        signals, _ = self._throttle()
        if signals.typing(chat_id):
            session = self._session
            await self._messages.typing(session.user_id, session.device_id, chat_id)

    async def _read(self, chat_id: int, seq: int) -> None:
        signals, reads = self._throttle()
        if signals.read(chat_id, seq):
            session = self._session
            await self._messages.mark_read(session.user_id, session.device_id, chat_id, seq)
        else:
            reads.wake()

    async def _send_read(self, chat_id: int, seq: int) -> None:
        """A held read mark's turn (see `node.http.ws.signals`); refusals as error frames."""
        session = self._session
        try:
            await self._messages.mark_read(session.user_id, session.device_id, chat_id, seq)
        except errors.ApiError as exc:
            session.offer_frame(frames.error_frame(exc.code, exc.message))

    def _reply_to(self, client_msg_id: str) -> _Reply:
        return _Reply(self._session, client_msg_id)


class _Reply:
    """Turns a send's outcome into a `sent` or `error` frame on the sending device."""

    __slots__ = ("_client_msg_id", "_session")

    def __init__(self, session: DeviceSession, client_msg_id: str) -> None:
        self._session = session
        self._client_msg_id = client_msg_id

    def __call__(self, outcome: SendOutcome) -> None:
        if outcome.stored and outcome.message_json is not None:
            self._session.offer_frame(
                frames.sent_frame_from(self._client_msg_id, outcome.message_json)
            )
            return
        error = errors.send_failure(outcome.status)
        self._session.offer_frame(
            frames.error_frame(error.code, error.message, self._client_msg_id)
        )


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
