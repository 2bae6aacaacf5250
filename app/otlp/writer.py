"""Group commit for OTLP exports: concurrent requests written in one transaction.

Exporters send many batches at once (the SDK's ``BatchSpanProcessor`` from
every process, collectors from several workers), and on SQLite writes take
turns on one connection. A commit costs about as much as the rows it writes
(every index page a batch touches is written out again, and checkpointed), so
while one transaction runs, the requests that arrive queue here and the next
transaction takes them all: measured on 512-span batches, four requests per
commit halve the commit cost per span.

What each request sees is unchanged. Its spans are written atomically (with
the others of its group), it waits until they are committed, and it gets its
own answer: a group that fails for any reason but the database itself is
written again one request at a time, so a bad request fails alone; and when a
group had spans of another scope's trace, each request is written again alone
to count its own (a re-sent batch changes nothing, so this is only a read).
Spans of one trace in several requests of a group are merged, as if they had
come in one batch, which is one of the orders they may arrive in anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from app.groupcommit import GroupCommit, Pending, give_result
from app.otlp.mapping import Trace
from app.store import Store

# A group stops growing past this many spans (eight default SDK batches): one
# transaction stays short enough not to hold up other writers for long.
MAX_GROUP_SPANS = 4096


@dataclass
class _Batch:
    traces: list[Trace]
    scope_id: str
    spans: int


class TraceWriter(GroupCommit[_Batch, int]):
    """Writes mapped traces through ``store.write_traces``, grouping concurrent
    requests of the same scope into one transaction. One per app (event loop)."""

    task_name = "runyard-otlp-writer"

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    async def write(self, traces: list[Trace], scope_id: str) -> int:
        """Write ``traces`` in ``scope_id``; the number of spans refused because
        their trace belongs to another scope. Raises what the store raised."""
        spans = sum(len(t.roots) + len(t.calls) for t in traces)
        return await self.submit(_Batch(traces, scope_id, spans))

    def _take(self, queue: list[Pending[_Batch, int]]) -> list[Pending[_Batch, int]]:
        """The oldest request and those queued after it in its scope, up to the cap."""
        scope_id = queue[0].item.scope_id
        group: list[Pending[_Batch, int]] = []
        spans = 0
        for request in queue:
            if request.item.scope_id == scope_id and (
                    not group or spans + request.item.spans <= MAX_GROUP_SPANS):
                group.append(request)
                spans += request.item.spans
        return group

    async def _commit(self, group: list[Pending[_Batch, int]]) -> None:
        try:
            written = await run_in_threadpool(self.store.write_traces,
                                              merge([r.item.traces for r in group]),
                                              group[0].item.scope_id)
        except Exception as exc:
            await self._failed(group, exc)
            return
        if written["rejected_spans"] and len(group) > 1:
            for request in group:
                await self._commit([request])
            return
        for request in group:
            give_result(request, written["rejected_spans"])


def merge(batches: list[list[Trace]]) -> list[Trace]:
    """The traces of several requests, each trace once (its spans in request order)."""
    if len(batches) == 1:
        return batches[0]
    merged: dict[str, Trace] = {}
    for traces in batches:
        for trace in traces:
            into = merged.get(trace.trace_id)
            if into is None:
                merged[trace.trace_id] = Trace(trace.trace_id, trace.execution_id,
                                               list(trace.roots), list(trace.calls))
            else:
                into.roots.extend(trace.roots)
                into.calls.extend(trace.calls)
    return list(merged.values())
