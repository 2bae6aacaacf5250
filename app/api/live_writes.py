"""Group commit for the live write endpoints (create, patch, tool calls, events,
interactions): the requests that arrive while one transaction runs are
written together in the next (``app.groupcommit`` says why).

What each request sees is unchanged. Its write is atomic, it is answered
once its transaction has committed, and it gets its own answer: an operation
the store refuses (404, 409, 422) is rolled back alone, in its savepoint,
and answered with its error while the rest of its group commits
(``Store.write_each``). When a group fails for any reason but the database
itself, each operation is written again in a transaction of its own, so a
request that trips a bug fails alone; when the database fails (disk full,
read-only, unreachable), every request of the group gets that 503, as each
would have alone. Requests on one run keep their order: a group runs them in
the order they arrived, as one writer at a time always did.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from app.groupcommit import GroupCommit, Pending, give_error, give_result
from app.store import Store
from app.store.errors import StoreError
from app.store.writes import WriteOp

# A group stops growing here: one transaction stays short enough (a few ms)
# not to hold up other writers. Admission control admits 16 writes at once
# by default (``RUNYARD_MAX_IN_FLIGHT``), so groups rarely reach it.
MAX_GROUP = 64


class LiveWriter(GroupCommit[WriteOp[Any], Any]):
    """Runs write operations (``app.store.writes``) through ``store.write_each``,
    a group of concurrent requests to a transaction. One per app (event loop)."""

    task_name = "runyard-live-writer"

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def _take(self, queue: list[Pending[WriteOp[Any], Any]]) -> list[Pending[WriteOp[Any], Any]]:
        return queue[:MAX_GROUP]

    async def _commit(self, group: list[Pending[WriteOp[Any], Any]]) -> None:
        try:
            outcomes = await run_in_threadpool(self.store.write_each, [p.item for p in group])
        except Exception as exc:
            await self._failed(group, exc)
            return
        for pending, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, StoreError):
                give_error(pending, outcome)
            else:
                give_result(pending, outcome)
