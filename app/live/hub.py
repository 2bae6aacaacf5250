"""Fan-out of the change feed to connected clients.

One tailer task per process reads feed rows after its head (one query per
wake, however many clients), loads the changed runs once, and puts messages on
each subscriber's bounded queue. List subscribers are grouped by their filter,
so a thousand browsers on the default view cost one match per changed run, and
each message body is encoded once and shared.

A client that stops reading fills its queue; it is then closed rather than
buffered without limit, and reconnects with ``Last-Event-ID`` to catch up from
the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from app.live.notifier import Notifier
from app.store import Store
from app.store.changes import changes_row
from app.store.errors import storage_failure
from app.store.filters import ExecutionFilter
from app.store.inputs import TERMINAL
from app.store.records import event_out, execution_out

log = logging.getLogger("runyard.live")

RowRenderer = Callable[[dict[str, Any]], str]
EventRenderer = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Message:
    """One SSE message: its id (an event id), event name and data text.

    ``wire`` is the encoded message, made once and shared by every subscriber
    it goes to.
    """

    id: int
    event: str
    data: str
    terminal: bool = False
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = ServerSentEvent(data=self.data, event=self.event, id=str(self.id)).encode()
        object.__setattr__(self, "wire", encoded)


@dataclass(frozen=True)
class Batch:
    """The messages one dispatch has for a subscriber, in id order, with their
    bytes joined once: every subscriber of the same view is sent the same object."""

    messages: tuple[Message, ...]
    wire: bytes

    @classmethod
    def of(cls, messages: list[Message]) -> Batch:
        return cls(tuple(messages), b"".join(m.wire for m in messages))


@dataclass(eq=False)
class Subscriber:
    """One connected client's bounded queue of batches.

    ``render`` turns a changed row (or an event, for a run's stream) into the
    message data (None: JSON); subscribers with the same ``render_key`` share
    one rendering. ``queue_size`` bounds the *messages* waiting, whatever the
    batching.
    """

    queue_size: int
    filter: ExecutionFilter | None = None
    execution_id: str | None = None
    render: Callable[[dict[str, Any]], str] | None = None
    render_key: str = ""
    closed: bool = False
    _batches: deque[Batch] = field(default_factory=deque)
    _pending: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, batch: Batch) -> None:
        """Queue a batch; a client this far behind is closed instead of buffered."""
        if self.closed:
            return
        if self._pending + len(batch.messages) > self.queue_size:
            self.close()
            return
        self._batches.append(batch)
        self._pending += len(batch.messages)
        self._ready.set()

    async def take(self) -> list[Batch] | None:
        """Everything queued (waiting for something first); None once closed."""
        while not self._batches and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        out = list(self._batches)
        self._batches.clear()
        self._pending = 0
        return out

    def close(self) -> None:
        """End this subscriber's stream at its next read."""
        self.closed = True
        self._batches.clear()
        self._pending = 0
        self._ready.set()


class Hub:
    """The tailer and the subscribers of one process."""

    def __init__(self, store: Store, notifier: Notifier, *, idle_poll_s: float,
                 coalesce_s: float, queue_size: int) -> None:
        self.store = store
        self.notifier = notifier
        self.idle_poll_s = idle_poll_s
        self.coalesce_s = coalesce_s
        self.queue_size = queue_size
        self.head = 0
        self._lists: set[Subscriber] = set()
        self._runs: dict[str, set[Subscriber]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    # -- subscribers --------------------------------------------------------
    def subscribe_list(self, flt: ExecutionFilter, render: RowRenderer | None = None,
                       render_key: str = "") -> Subscriber:
        """A subscriber to changed rows that match ``flt``."""
        sub = Subscriber(self.queue_size, filter=flt, render=render, render_key=render_key)
        self._lists.add(sub)
        return sub

    def subscribe_run(self, execution_id: str,
                      render: EventRenderer | None = None) -> Subscriber:
        """A subscriber to every event of one run."""
        sub = Subscriber(self.queue_size, execution_id=execution_id, render=render)
        self._runs[execution_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber (its stream ended)."""
        sub.closed = True
        self._lists.discard(sub)
        if sub.execution_id is not None:
            subs = self._runs.get(sub.execution_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._runs[sub.execution_id]

    @property
    def subscriber_count(self) -> int:
        return len(self._lists) + sum(len(s) for s in self._runs.values())

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Begin tailing at the current head of the feed."""
        self.head = await run_in_threadpool(self.store.last_event_id)
        self._task = asyncio.create_task(self._run(), name="runyard-feed-tailer")

    async def stop(self) -> None:
        """Stop tailing and end every stream."""
        for sub in [*self._lists, *(s for subs in self._runs.values() for s in subs)]:
            sub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            if self.notifier.heard <= self.head:
                await self.notifier.wait(self.idle_poll_s)
            if self.coalesce_s:
                # Let a burst of commits land so it is read (and coalesced) at once.
                await asyncio.sleep(self.coalesce_s)
            try:
                await self.poll_once()
            except Exception as exc:
                # The database down or restarting: keep the head and the
                # subscribers, and read on from the head once it answers.
                if (failure := storage_failure(exc)) is not None:
                    log.warning("reading the change feed failed (%s); retrying", failure.code)
                else:
                    log.exception("reading the change feed failed; retrying")
                await asyncio.sleep(1)

    async def poll_once(self) -> None:
        """Read and dispatch everything after the head (in pages)."""
        while True:
            rows = await run_in_threadpool(self.store.feed_after, self.head, 1000)
            if not rows:
                return
            await self._dispatch(rows)
            self.head = rows[-1]["id"]
            if len(rows) < 1000:
                return

    async def _dispatch(self, rows: list[dict[str, Any]]) -> None:
        if self._runs:
            by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                if row["execution_id"] in self._runs:
                    by_run[row["execution_id"]].append(row)
            for execution_id, run_rows in by_run.items():
                plain: Batch | None = None
                for sub in list(self._runs.get(execution_id, ())):
                    if sub.render is None:
                        plain = plain or Batch.of([run_message(r) for r in run_rows])
                        sub.offer(plain)
                    else:
                        sub.offer(Batch.of([run_message(r, sub.render) for r in run_rows]))
        if not self._lists:
            return
        newest: dict[str, int] = {}
        for row in rows:
            if changes_row(row["type"], row["level"]):
                newest[row["execution_id"]] = row["id"]
        if not newest:
            return
        needs_tools = any(s.filter is not None and (s.filter.tool or s.filter.not_tool)
                          for s in self._lists)
        current, tools = await run_in_threadpool(
            self.store.rows_and_tools, list(newest), needs_tools)
        changed = sorted((newest[i], r) for i, r in current.items())
        by_filter: dict[ExecutionFilter, list[Subscriber]] = defaultdict(list)
        for sub in self._lists:
            assert sub.filter is not None
            by_filter[sub.filter].append(sub)
        encoded: dict[tuple[str, str], Message] = {}
        for flt, subs in by_filter.items():
            matched = [(i, row) for i, row in changed if flt.matches(row, tools.get(row["id"]))]
            if not matched:
                continue
            batches: dict[str, Batch] = {}
            for sub in subs:
                if sub.render_key not in batches:
                    messages = []
                    for event_id, row in matched:
                        key = (row["id"], sub.render_key)
                        if key not in encoded:
                            encoded[key] = list_message(event_id, row, sub.render)
                        messages.append(encoded[key])
                    batches[sub.render_key] = Batch.of(messages)
                sub.offer(batches[sub.render_key])


def list_message(event_id: int, row: dict[str, Any], render: RowRenderer | None) -> Message:
    """The ``execution`` message for a changed row (JSON, or rendered by ``render``)."""
    data = render(row) if render else json.dumps(execution_out(row), separators=(",", ":"))
    return Message(event_id, "execution", data)


def is_terminal(event: dict[str, Any]) -> bool:
    """True for the event that ends a run: its terminal status change (or creation)."""
    data = event.get("data")
    if not isinstance(data, dict):
        return False
    return ((event["type"] == "execution.status" and data.get("to") in TERMINAL)
            or (event["type"] == "execution.created" and data.get("status") in TERMINAL))


def run_message(event: dict[str, Any], render: EventRenderer | None = None) -> Message:
    """The message for one event of a run's own stream (JSON, or rendered)."""
    data = render(event) if render else json.dumps(event_out(event), separators=(",", ":"))
    return Message(event["id"], event["type"], data, is_terminal(event))
