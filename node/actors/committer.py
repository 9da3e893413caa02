"""Group commit across chats.

A chat actor hands each batch it wants stored to the pipeline and awaits the outcome; each of the
pipeline's workers takes everything waiting — batches of many chats — and stores it in ONE
transaction (`MessageStore.post_many`). Under light load a batch goes alone at once; under heavy
load batches pile up while a transaction is in flight and the next one carries them all, so the
number of transactions (and PostgreSQL round trips) stays small whatever the number of chats.

Each chat actor has at most one batch in flight, so the queue holds at most one entry per live
chat. The chat actor stays the only writer of its chat's seq: it decides what goes into its batch
and at which fencing epoch; the seqs are assigned by the transaction that stores the rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from node.domain import PostResult
from node.storage import ChatBatch, ChatMissing, Fenced, MessageStore, NewMessage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    batch: ChatBatch
    future: asyncio.Future[list[PostResult]]


class CommitPipeline:
    def __init__(self, store: MessageStore, *, workers: int = 2, max_rows: int = 4096) -> None:
        self._store = store
        self._workers = workers
        self._max_rows = max_rows
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self.transactions = 0

    async def commit(
        self, chat_id: int, epoch: int, messages: Sequence[NewMessage]
    ) -> list[PostResult]:
        """Store one chat's batch (in a transaction shared with other chats); one result per
        message. Raises Fenced, ChatMissing, or the database's error."""
        future: asyncio.Future[list[PostResult]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(ChatBatch(chat_id, epoch, messages), future))
        self._wakeup.set()
        return await future

    async def run(self) -> None:
        """The workers, until cancelled; what is queued then fails with CancelledError."""
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(self._workers):
                    group.create_task(self._work(), name=f"commit-{n}")
        finally:
            while self._queue:
                pending = self._queue.popleft()
                if not pending.future.done():
                    pending.future.cancel()

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            taken = self._take()
            if self._queue:
                self._wakeup.set()  # more waiting: let another worker start on it
            await self._commit(taken)

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        rows = 0
        while self._queue and (
            not taken or rows + len(self._queue[0].batch.messages) <= self._max_rows
        ):
            pending = self._queue.popleft()
            taken.append(pending)
            rows += len(pending.batch.messages)
        return taken

    async def _commit(self, taken: list[_Pending]) -> None:
        try:
            outcomes = await self._store.post_many([p.batch for p in taken])
        except asyncio.CancelledError:
            for pending in taken:
                pending.future.cancel()
            raise
        except Exception as exc:  # the database is down or refused: every batch fails alike
            for pending in taken:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.transactions += 1
        for pending in taken:
            outcome = outcomes[pending.batch.chat_id]
            if pending.future.done():
                continue
            if isinstance(outcome, Fenced | ChatMissing):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
