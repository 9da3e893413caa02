"""Group commit across chats.

A chat actor hands each batch it wants stored to the pipeline and awaits the outcome; each of the
pipeline's workers takes everything waiting — batches of many chats — and stores it in ONE
transaction (`MessageStore.post_many`). Under light load a batch goes alone at once; under heavy
load batches pile up while a transaction is in flight and the next one carries them all, so the
number of transactions (and PostgreSQL round trips) stays small whatever the number of chats.

Batching adapts to load: while commits arrive faster than `linger_above` per second, a worker
waits `linger` (about a millisecond) before taking what is queued, so one transaction carries
several chats' batches where it would otherwise carry one; below that rate nothing waits.

Each chat actor has at most one batch in flight, so the queue holds at most one entry per live
chat. The chat actor stays the only writer of its chat's seq: it decides what goes into its batch
and at which fencing epoch; the seqs are assigned by the transaction that stores the rows.

Guarantees:

* Batching never widens a failure. When a shared transaction fails for any reason other than the
  database being unreachable, each chat's batch is stored again on its own, and a batch that still
  fails is stored message by message: only the messages PostgreSQL refuses fail, with status
  `invalid` (it refused the data) or `failed` (anything else); every other one is stored.
* Every wait is bounded. A transaction that does not answer within `timeout` is cancelled in the
  database (asyncpg's statement timeout), and `commit` never waits longer than `timeout` plus a
  short grace, even if no worker is running: the caller gets `StoreUnavailable`. A batch whose
  caller stopped waiting is not stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from node.domain import PostResult, SendStatus
from node.load_gauge import LoadGauge
from node.storage.errors import (
    CONNECTION_ERRORS,
    ChatMissing,
    Fenced,
    StoreUnavailable,
    is_data_error,
)
from node.storage.messages import ChatBatch, MessageStore, NewMessage

log = logging.getLogger(__name__)

_GRACE = 1.0  # beyond the statement timeout, for the queue and the round trip

Outcome = list[PostResult] | Fenced | ChatMissing | StoreUnavailable


@dataclass(slots=True)
class _Pending:
    batch: ChatBatch
    future: asyncio.Future[Outcome]


class CommitPipeline:
    def __init__(
        self,
        store: MessageStore,
        *,
        timeout: float,
        workers: int = 2,
        max_rows: int = 4096,
        linger: float = 0.001,
        linger_above: float = 300.0,
    ) -> None:
        self._store = store
        self.timeout = timeout
        self._workers = workers
        self._max_rows = max_rows
        self._linger = linger
        self._linger_above = linger_above
        self._load = LoadGauge()
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self.transactions = 0

    def __len__(self) -> int:
        return len(self._queue)

    async def commit(
        self, chat_id: int, epoch: int, messages: Sequence[NewMessage]
    ) -> list[PostResult]:
        """Store one chat's batch (in a transaction shared with other chats); one result per
        message. Raises Fenced, ChatMissing or StoreUnavailable."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(ChatBatch(chat_id, epoch, messages), future))
        self._load.arrived()
        self._wakeup.set()
        try:
            outcome = await asyncio.wait_for(future, self.timeout + _GRACE)
        except TimeoutError:
            raise StoreUnavailable("the commit pipeline did not answer in time") from None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def run(self) -> None:
        """The workers, until cancelled or one of them fails (its batches are answered first);
        what is still queued stays for the next run."""
        async with asyncio.TaskGroup() as group:
            for n in range(self._workers):
                group.create_task(self._work(), name=f"commit-{n}")

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._linger and self._load.current() >= self._linger_above:
                await asyncio.sleep(self._linger)  # under load: let more batches join this one
            taken = self._take()
            if self._queue:
                self._wakeup.set()  # more waiting: let another worker start on it
            if not taken:
                continue
            try:
                outcomes = await self._store_isolated([p.batch for p in taken])
            except BaseException:
                _settle(taken, {p.batch.chat_id: StoreUnavailable("commit aborted") for p in taken})
                raise
            self.transactions += 1
            _settle(taken, outcomes)

    def _take(self) -> list[_Pending]:
        """Everything waiting, up to `max_rows` rows; batches nobody waits for are dropped."""
        taken: list[_Pending] = []
        rows = 0
        while self._queue and (
            not taken or rows + len(self._queue[0].batch.messages) <= self._max_rows
        ):
            pending = self._queue.popleft()
            if pending.future.done():  # its caller gave up: never store it
                continue
            taken.append(pending)
            rows += len(pending.batch.messages)
        return taken

    async def _store_isolated(self, batches: list[ChatBatch]) -> dict[int, Outcome]:
        """All batches in one transaction; if that fails, each one alone (see the module doc)."""
        try:
            return dict(await self._store.post_many(batches, timeout=self.timeout))
        except CONNECTION_ERRORS as exc:
            down = StoreUnavailable(f"database unavailable: {exc!r}")
            return {b.chat_id: down for b in batches}
        except Exception as exc:
            if len(batches) == 1 and len(batches[0].messages) == 1:
                return {batches[0].chat_id: [_refused(exc)]}
            log.warning(
                "commit.isolating",
                extra={"chats": len(batches), "error": type(exc).__name__},
            )
        outcomes: dict[int, Outcome] = {}
        for batch in batches:
            if len(batches) > 1:
                outcomes.update(await self._store_isolated([batch]))
                continue
            results: list[PostResult] = []  # one chat whose batch failed: message by message
            for n, message in enumerate(batch.messages):
                single = replace(batch, messages=(message,))
                outcome = (await self._store_isolated([single]))[batch.chat_id]
                if isinstance(outcome, list):
                    results += outcome
                elif isinstance(outcome, StoreUnavailable) and results:  # keep what was stored
                    left = len(batch.messages) - n
                    results += [PostResult(status="unavailable", message=None)] * left
                    break
                else:
                    return {batch.chat_id: outcome}
            outcomes[batch.chat_id] = results
        return outcomes


def _refused(exc: Exception) -> PostResult:
    status: SendStatus = "invalid" if is_data_error(exc) else "failed"
    log.warning("commit.refused", extra={"status": status, "error": type(exc).__name__})
    return PostResult(status=status, message=None)


def _settle(taken: list[_Pending], outcomes: dict[int, Outcome]) -> None:
    for pending in taken:
        if not pending.future.done():
            pending.future.set_result(outcomes[pending.batch.chat_id])
