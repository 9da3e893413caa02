"""One connected device: a bounded outbox, written to the socket in order.
It is the `DeviceOutlet` delivery hands live batches to (`node.actors.ports`).

Everything a device receives is ordered: the writer first sends `ready`, then the backlog
(everything this device has not acked: from the dormant user's Redis mailbox where that holds
every needed seq, else from PostgreSQL), then whatever was offered meanwhile and afterwards. There
is a writer task only while something waits to be written: an idle connection holds none. When
no writer runs, nothing is queued and the socket's write buffer is short, a live batch that
continues a chat is written at once by the caller (`offer_batch`), as bytes encoded once for all
recipients; anything else (a hole to fill, a chat first seen, a socket that does not keep up)
goes through the outbox and a writer task started for it.

Per chat the session keeps `sent`: the highest seq this connection has written (or the device's
acked position). A message at or below it is skipped (never one message twice in one
connection) and a message above `sent + 1` first has the hole filled from PostgreSQL (live
delivery over Pub/Sub may lose messages; the record may not). So within a chat frames go out in
seq order with no gaps, whatever path each message took.

`offer_*` never blocks: past `outbox_limit` queued items the session closes the socket (1013)
instead of buffering without bound; the device reconnects and resumes from its cursors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web

from node import frames, metrics, tracing
from node.actors.ports import BatchMeta, LiveBatch
from node.domain import ChatPosition
from node.errors import NotMember, ValidationFailed
from node.services.device_sync import DeviceSync

log = logging.getLogger(__name__)

_MSG, _FRAME, _RESYNC, _TRIM = range(4)
_Item = tuple[int, int, int, bytes, "BatchMeta | None"]
_LIVE = metrics.MESSAGES_DELIVERED.labels(path="live")
_BACKLOG = metrics.MESSAGES_DELIVERED.labels(path="backlog")
_FILLED = metrics.MESSAGES_DELIVERED.labels(path="fill")


_WRITE_ERRORS = (ConnectionError, RuntimeError, asyncio.TimeoutError)
# a live batch is written by its caller only while the socket's write buffer holds less than
# this; beyond it the writer task takes over and waits for the socket to drain
_DIRECT_BUFFER_LIMIT = 16 * 1024
# the backlog on connect goes out in writes of about this many bytes (`_send_all`)
_BUNDLE_BYTES = 64 * 1024


class WriteFlusher:
    """Writes written "now" go out at the end of the event loop's current pass: what one pass
    gives a socket (a sender's own message and its `sent`, several chats' batches) is one
    write, one system call. One per node; sessions join when they first hold bytes in a pass."""

    __slots__ = ("_scheduled", "_sessions")

    def __init__(self) -> None:
        self._sessions: list[DeviceSession] = []
        self._scheduled = False

    def add(self, session: DeviceSession) -> None:
        self._sessions.append(session)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        sessions, self._sessions = self._sessions, []
        self._scheduled = False
        for session in sessions:
            session.flush()


@dataclass(slots=True, frozen=True)
class SessionDeps:
    sync: DeviceSync
    node_id: str
    backlog_limit: int
    outbox_limit: int
    abort_after: float = 2.0  # a socket that cannot take its close frame is cut after this
    flusher: WriteFlusher = field(default_factory=WriteFlusher)


class DeviceSession:
    __slots__ = (
        "_abort_timer",
        "_close_code",
        "_close_reason",
        "_deps",
        "_mailbox_count",
        "_mailbox_high",
        "_outbox",
        "_pending",
        "_started",
        "_task",
        "_traces",
        "_transport",
        "_ws",
        "acked",
        "delivered",
        "device_id",
        "epoch",
        "sent",
        "user_id",
    )  # one per connected device: kept small

    def __init__(
        self,
        user_id: int,
        device_id: str,
        ws: web.WebSocketResponse,
        deps: SessionDeps,
        transport: asyncio.BaseTransport | None = None,
    ):
        self.user_id = user_id
        self.device_id = device_id
        self.epoch = 0
        self._ws = ws
        self._transport = transport
        self._deps = deps
        self._outbox: deque[_Item] | None = None  # made on demand: idle sockets are the norm
        self._task: asyncio.Task[None] | None = None  # the writer, while it has work
        self._started = False
        self._pending: bytes | list[bytes] | None = None  # written now, sent at the pass's end
        self._close_code: int | None = None
        self._close_reason = ""
        self.sent: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self._mailbox_high: dict[int, int] | None = None
        self._mailbox_count = 0
        self._traces: dict[int, tracing.Carrier] | None = None  # chat -> last live message's trace
        self._abort_timer: asyncio.TimerHandle | None = None
        self.delivered = 0

    def __repr__(self) -> str:
        return f"<DeviceSession user={self.user_id} device={self.device_id!r}>"

    @property
    def closing(self) -> bool:
        return self._close_code is not None

    @property
    def outbox_depth(self) -> int:
        return len(self._outbox) if self._outbox is not None else 0

    # --- offered by delivery (never block) ----------------------------------------------------

    def offer_batch(self, batch: LiveBatch) -> int:
        """Write the batch now if that keeps order and needs no waiting; else queue it. Returns
        the number of frames written now."""
        if self._close_code is not None:
            return 0
        chat_id, seqs = batch.chat_id, batch.seqs
        if not seqs:
            return 0
        sent = self.sent.get(chat_id)
        if sent is not None and seqs[-1] <= sent:
            return 0  # all of it already went out (e.g. with the backlog)
        meta = batch.meta
        if (
            sent is not None
            and batch.contiguous
            and seqs[0] <= sent + 1
            and (meta is None or not meta.trace)
            and self._may_write_now()
        ):
            skip = sent + 1 - seqs[0]
            self._write_now(batch.wire if skip == 0 else b"".join(batch.wires[skip:]))
            self.sent[chat_id] = seqs[-1]
            written = len(seqs) - skip
            self.delivered += written
            return written
        floor = -1 if sent is None else sent
        for seq, frame in zip(seqs, batch.frames, strict=True):
            if seq > floor:
                self._push((_MSG, chat_id, seq, frame, meta))
        return 0

    def offer_frame(self, frame: bytes) -> None:
        """An ephemeral frame: written now when nothing is queued before it, else queued."""
        if self._close_code is None and self._may_write_now():
            self._write_now(frames.ws_text(frame))
            return
        self._push((_FRAME, 0, 0, frame, None))

    def _may_write_now(self) -> bool:
        """Nothing queued or being written, the backlog sent, the socket open and keeping up:
        what is offered now may be written now, in order."""
        transport = self._transport
        return (
            self._task is None
            and self._started
            and self._outbox is None
            and transport is not None
            and not self._ws.closed
            and not transport.is_closing()
            and transport.get_write_buffer_size() < _DIRECT_BUFFER_LIMIT  # type: ignore[attr-defined]
        )

    def _write_now(self, data: bytes) -> None:
        """Into this pass's bytes for the socket (`flush` writes them, in order)."""
        pending = self._pending
        if pending is None:
            self._pending = data  # the usual case: one write in a pass, no list
            self._deps.flusher.add(self)
        elif isinstance(pending, list):
            pending.append(data)
        else:
            self._pending = [pending, data]

    def flush(self) -> None:
        """Write what this pass gave the socket, as one write; dropped if the socket is closing
        (the device resumes from its cursors)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        transport = self._transport
        if transport is None or transport.is_closing() or self._ws.closed:
            return
        try:
            transport.write(  # type: ignore[attr-defined]
                b"".join(pending) if isinstance(pending, list) else pending
            )
        except Exception as exc:  # the socket is going away: the reader ends the session
            log.info("session.write_stopped", extra={"user_id": self.user_id, "error": repr(exc)})
            self.close(WSCloseCode.GOING_AWAY, "write failed")

    def request_resync(self) -> None:
        """Compare every chat with PostgreSQL and fill what this connection missed."""
        self._push((_RESYNC, 0, 0, b"", None))

    def close(self, code: int, reason: str) -> None:
        """Close with `code`. The writer sends the close frame when it is free; if it is stuck
        writing to a client that does not read, the connection is cut after `abort_after`."""
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason
            self._ensure_writer()
            self._abort_timer = asyncio.get_running_loop().call_later(
                self._deps.abort_after, self._abort
            )

    def _abort(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            log.info("session.aborted", extra={"user_id": self.user_id, "device": self.device_id})
            transport.abort()  # type: ignore[attr-defined]

    def _push(self, item: tuple[int, int, int, bytes, BatchMeta | None]) -> None:
        if self._close_code is not None:
            return
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        elif len(outbox) >= self._deps.outbox_limit:
            log.warning(
                "session.outbox_overflow", extra={"user_id": self.user_id, "device": self.device_id}
            )
            metrics.SLOW_CONSUMERS.inc()
            self.close(WSCloseCode.TRY_AGAIN_LATER, "outbox overflow: reconnect to resume")
            return
        outbox.append(item)
        self._ensure_writer()

    def _ensure_writer(self) -> None:
        """A writer task for what was queued (or the close), unless one runs or the session
        has not started yet (`start` begins with the backlog, then the outbox)."""
        if self._task is None and self._started:
            self._task = asyncio.get_running_loop().create_task(
                self._write_outbox(), name=f"ws-writer:{self.user_id}"
            )

    # --- acks, from the socket's reader --------------------------------------------------------

    async def ack(self, chat_id: int, seq: int) -> None:
        """Record that this device has every message of the chat up to `seq`. Refused (raises)
        for a chat the user is not in, or above the chat's last seq."""
        if seq > self.sent.get(chat_id, -1):
            position = await self._deps.sync.position(self.user_id, self.device_id, chat_id)
            if position is None:
                raise NotMember()
            if seq > position.last_seq:
                raise ValidationFailed(
                    f"ack {seq} is above the chat's last seq {position.last_seq}",
                    code="invalid_ack",
                )
            self.sent[chat_id] = max(self.sent.get(chat_id, 0), seq, position.acked_seq)
        if seq <= self.acked.get(chat_id, 0):
            return
        self.acked[chat_id] = seq
        if self._traces:
            tracing.event("ws.ack", parent=self._traces.pop(chat_id, {}), chat_id=chat_id, seq=seq)
        self._deps.sync.acked(self.user_id, self.device_id, chat_id, seq)
        high = self._mailbox_high
        if high is not None and all(
            self.acked.get(chat, 0) >= top or chat not in self.sent for chat, top in high.items()
        ):
            self._mailbox_high = None
            self._push((_TRIM, 0, 0, b"", None))

    # --- the writer task -------------------------------------------------------------------------

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The writer task, while there is one (it ends when the outbox is empty)."""
        return self._task

    def start(self) -> None:
        """The socket is open: send ready and the backlog, then what was offered meanwhile."""
        self._started = True
        self._task = asyncio.get_running_loop().create_task(
            self._write_outbox(first=True), name=f"ws-writer:{self.user_id}"
        )

    async def _write_outbox(self, *, first: bool = False) -> None:
        """The writer: (first) ready and the backlog; then the outbox until it is empty, when
        the task ends; or the close, once asked for."""
        try:
            if first:
                await self._send(
                    frames.ready_frame(self.user_id, self.device_id, self._deps.node_id)
                )
                await self._sync()
            while self._close_code is None:
                outbox = self._outbox
                if not outbox:
                    # no await from here to the task's end: an offer after this starts a new one
                    self._outbox = None
                    self._task = None
                    return
                kind, chat_id, seq, frame, meta = outbox.popleft()
                if kind == _MSG:
                    await self._write_message(chat_id, seq, frame, meta)
                elif kind == _FRAME:
                    await self._send(frame)
                elif kind == _RESYNC:
                    await self._resync()
                else:
                    await self._trim_mailbox()
            self.flush()
            await self._ws.close(code=self._close_code, message=self._close_reason.encode())
        except _WRITE_ERRORS as exc:
            log.info("session.write_stopped", extra={"user_id": self.user_id, "error": str(exc)})
            self._stopped_writing()
            await self._ws.close()
        except Exception:  # e.g. PostgreSQL down while reading the backlog: let the device retry
            log.exception(
                "session.failed", extra={"user_id": self.user_id, "device": self.device_id}
            )
            self._stopped_writing()
            await self._ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"try again")
        if self._abort_timer is not None:
            self._abort_timer.cancel()

    def _stopped_writing(self) -> None:
        """The socket failed: nothing more is written or queued (the reader ends the session)."""
        if self._close_code is None:
            self._close_code, self._close_reason = WSCloseCode.GOING_AWAY, "write failed"
        self._outbox = None

    async def _send(self, frame: bytes) -> None:
        if self._pending is not None:
            self.flush()  # what was written "now" goes first
        await self._ws.send_frame(frame, WSMsgType.TEXT)

    async def _send_all(self, payloads: list[bytes]) -> None:
        """`payloads` as text frames, in order, after what was written "now". While the socket
        keeps up they go out as one write per `_BUNDLE_BYTES` (not one per frame); once its
        write buffer is past `_DIRECT_BUFFER_LIMIT` the rest goes frame by frame through
        aiohttp's writer, which waits for the socket to drain."""
        if self._pending is not None:
            self.flush()
        i, n = 0, len(payloads)
        while i < n:
            transport = self._transport
            if (
                transport is None
                or self._ws.closed
                or transport.is_closing()
                or transport.get_write_buffer_size() >= _DIRECT_BUFFER_LIMIT  # type: ignore[attr-defined]
            ):
                for payload in payloads[i:]:
                    await self._ws.send_frame(payload, WSMsgType.TEXT)
                return
            bundle: list[bytes] = []
            size = 0
            while i < n and size < _BUNDLE_BYTES:
                wire = frames.ws_text(payloads[i])
                bundle.append(wire)
                size += len(wire)
                i += 1
            transport.write(b"".join(bundle))  # type: ignore[attr-defined]
            if i < n:
                await asyncio.sleep(0)  # let the loop turn between bundles

    async def _write_message(
        self, chat_id: int, seq: int, frame: bytes, meta: BatchMeta | None
    ) -> None:
        sent = self.sent.get(chat_id)
        if sent is None:  # a chat joined after connecting: start where the device stands
            position = await self._deps.sync.position(self.user_id, self.device_id, chat_id)
            if position is None:
                return
            sent = self._start(position)
        if seq <= sent:
            return
        if seq > sent + 1:
            await self._fill(chat_id, sent, seq - 1)
        if meta is not None and meta.trace:
            with tracing.span(
                "ws.deliver", parent=meta.trace, chat_id=chat_id, seq=seq, node=self._deps.node_id
            ):
                await self._send(frame)
                if self._traces is None:
                    self._traces = {}
                self._traces[chat_id] = tracing.carrier()
        else:
            await self._send(frame)
        self.sent[chat_id] = seq
        self.delivered += 1
        _LIVE.inc()
        if meta is not None:
            metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - meta.committed_at))

    def _start(self, position: ChatPosition) -> int:
        """First sight of a chat in this connection: it starts where the device stands."""
        self.sent[position.chat_id] = position.acked_seq
        self.acked.setdefault(position.chat_id, position.acked_seq)
        return position.acked_seq

    async def _fill(self, chat_id: int, after: int, upto: int) -> None:
        """Send (after, upto] of a chat from PostgreSQL; older than the backlog limit: a gap.
        Nothing from before the user (last) joined: a member removed and added again while
        connected has a hole that is not theirs."""
        position = await self._deps.sync.position(self.user_id, self.device_id, chat_id)
        if position is None:
            return  # not a member (any more): nothing to fill
        after = max(after, position.joined_seq)
        low = max(after, upto - self._deps.backlog_limit)
        if low > after:
            await self._send(frames.gap_frame(chat_id, after, low + 1))
        for message in await self._deps.sync.between(self.user_id, chat_id, low, upto):
            await self._send(frames.message_frame(message))
            self.sent[chat_id] = message.seq
            self.delivered += 1
            _FILLED.inc()
        self.sent[chat_id] = max(self.sent.get(chat_id, 0), low)

    async def _sync(self) -> None:
        """The backlog on connect: per chat at most the newest `backlog_limit` unacked
        messages, a `gap` frame first where older ones are skipped. Written in order, bundled
        into few socket writes (`_send_all`) once everything is read."""
        positions = await self._deps.sync.positions(self.user_id, self.device_id)
        mailbox = await self._deps.sync.mailbox(self.user_id)
        out: list[bytes] = []  # the frames, in the order they go out
        from_db: list[tuple[int, int, int]] = []
        planned: list[tuple[int, int, dict[int, bytes] | None]] = []
        for position in positions:
            chat_id, acked, last = position.chat_id, position.acked_seq, position.last_seq
            self.acked[chat_id] = acked
            self.sent[chat_id] = max(acked, self.sent.get(chat_id, 0))
            if last <= self.sent[chat_id]:
                continue
            low = max(acked, last - self._deps.backlog_limit)
            if low > acked:
                out.append(frames.gap_frame(chat_id, acked, low + 1))
                self.sent[chat_id] = low
            if mailbox is not None and mailbox.covers(chat_id, low, last):
                planned.append((chat_id, last, mailbox.frames[chat_id]))
            else:
                from_db.append((chat_id, low, last))
        for chat_id, last, held in planned:
            assert held is not None
            for seq in range(self.sent[chat_id] + 1, last + 1):
                out.append(held[seq])
                self.sent[chat_id] = seq
                self.delivered += 1
        if from_db:
            for message in await self._deps.sync.ranges(self.user_id, from_db):
                if message.seq > self.sent[message.chat_id]:
                    out.append(frames.message_frame(message))
                    self.sent[message.chat_id] = message.seq
                    self.delivered += 1
        # `sent` ran ahead of the socket only within this task, which writes all of `out`
        # before anything offered meanwhile (queued behind it); a failed write ends the session
        await self._send_all(out)
        if mailbox is not None and mailbox.count:
            self._mailbox_count = mailbox.count
            self._mailbox_high = mailbox.high_seqs()
        _BACKLOG.inc(self.delivered)
        metrics.BACKLOG_SIZE.observe(self.delivered)
        log.debug("session.synced", extra={"user_id": self.user_id, "delivered": self.delivered})

    async def _resync(self) -> None:
        """Every chat compared with PostgreSQL; what this connection missed is filled as `_fill`
        would, chat by chat, but read in one batched query for all chats (after a lost Redis
        every device resyncs at once)."""
        positions = await self._deps.sync.positions(self.user_id, self.device_id)
        wanted: list[tuple[int, int, int]] = []
        for position in positions:
            chat_id = position.chat_id
            sent = self.sent.get(chat_id)
            if sent is None:
                sent = self._start(position)
            if position.last_seq <= sent:
                continue
            after = max(sent, position.joined_seq)
            low = max(after, position.last_seq - self._deps.backlog_limit)
            if low > after:
                await self._send(frames.gap_frame(chat_id, after, low + 1))
            self.sent[chat_id] = max(sent, low)
            wanted.append((chat_id, low, position.last_seq))
        for message in await self._deps.sync.ranges(self.user_id, wanted):
            if message.seq > self.sent[message.chat_id]:
                await self._send(frames.message_frame(message))
                self.sent[message.chat_id] = message.seq
                self.delivered += 1
                _FILLED.inc()

    async def _trim_mailbox(self) -> None:
        await self._deps.sync.trim_mailbox(self.user_id, self._mailbox_count)
