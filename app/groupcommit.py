"""Group commit: requests that arrive while a write runs go in the next one together.

On SQLite writes take turns on one connection, and on PostgreSQL every write
that appends to the change feed takes the feed lock, so concurrent writes
queue anyway. Each transaction has a fixed cost beside its rows: a hop to a
worker thread and back, a pooled connection, the write lock, ``BEGIN`` and
``COMMIT`` (with SQLite's page writes and checkpoints), and one wake-up of
the live hub, which then reads the feed. Queued here, in the event loop, the
waiting requests hold no thread, and the next transaction pays that fixed
cost once for all of them. So a server gets cheaper per write exactly when writes
queue, instead of piling threads onto the GIL (docs/PERFORMANCE.md, "Soak").

A queue of our own: no library groups asyncio callers into one blocking call,
and the behaviour that matters (a group runs in a task of its own, so a
client that hangs up does not cancel the others' writes; each caller gets its
own answer) takes a few lines. What a group is and how it is written are
the subclass's (``_take``, ``_commit``); what each caller learns when a
group fails is decided once, here (``_failed``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.store.errors import storage_failure

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Pending(Generic[T, R]):
    """One caller's item and the answer it waits for."""

    item: T
    answer: asyncio.Future[R]


class GroupCommit(Generic[T, R]):
    """Queues items; one task at a time writes the queued ones a group at a time.
    One per app (event loop)."""

    task_name = "runyard-group-commit"

    def __init__(self) -> None:
        self._queue: list[Pending[T, R]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write ``item`` with whatever else is queued; its own answer, or what
        its write raised."""
        pending = Pending(item, asyncio.get_running_loop().create_future())
        # Retrieved even when the caller has gone (its handler cancelled): no
        # "exception was never retrieved" noise for an answer nobody waits for.
        pending.answer.add_done_callback(_retrieve)
        self._queue.append(pending)
        if self._task is None:
            # Its own task, not the caller's: a client that hangs up does not
            # cancel the writes of the others in its group.
            self._task = asyncio.create_task(self._drain(), name=self.task_name)
        return await asyncio.shield(pending.answer)

    async def _drain(self) -> None:
        try:
            while self._queue:
                group = self._take(self._queue)
                taken = {id(p) for p in group}
                self._queue = [p for p in self._queue if id(p) not in taken]
                try:
                    await self._commit(group)
                except asyncio.CancelledError:
                    for pending in group:
                        pending.answer.cancel()
                    raise
                except Exception as exc:  # a subclass's own bug: every caller hears of it
                    for pending in group:
                        give_error(pending, exc)
        finally:
            self._task = None
            for pending in self._queue:  # only when cancelled (shutdown)
                pending.answer.cancel()
            self._queue.clear()

    def _take(self, queue: list[Pending[T, R]]) -> list[Pending[T, R]]:
        """The next group: some of ``queue`` in order, the oldest first."""
        raise NotImplementedError

    async def _commit(self, group: list[Pending[T, R]]) -> None:
        """Write ``group`` and answer each of its callers (``give_result``, ``give_error``)."""
        raise NotImplementedError

    async def _failed(self, group: list[Pending[T, R]], exc: Exception) -> None:
        """``group``'s write raised ``exc``. The database failing (``storage_failure``)
        is every caller's answer, as it would have been alone; anything else
        may be one request's fault, so each of a larger group is written again
        alone, and only a request at fault fails."""
        if len(group) > 1 and storage_failure(exc) is None:
            for pending in group:
                await self._commit([pending])
            return
        for pending in group:
            give_error(pending, exc)


def give_result(pending: Pending[T, R], result: R) -> None:
    """Give ``pending`` its result (unless it has gone)."""
    if not pending.answer.done():
        pending.answer.set_result(result)


def give_error(pending: Pending[T, R], exc: BaseException) -> None:
    """Give ``pending`` an error (unless it has gone)."""
    if not pending.answer.done():
        pending.answer.set_exception(exc)


def _retrieve(answer: asyncio.Future[R]) -> None:
    if not answer.cancelled():
        answer.exception()
