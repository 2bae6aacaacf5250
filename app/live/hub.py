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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.live.notifier import Notifier
from app.store import Store
from app.store.changes import changes_row
from app.store.filters import ExecutionFilter
from app.store.inputs import TERMINAL
from app.store.records import event_out, execution_out

log = logging.getLogger("runyard.live")

RowRenderer = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Message:
    """One SSE message: its id (an event id), event name and data text."""

    id: int
    event: str
    data: str
    terminal: bool = False


CLOSE = Message(-1, "close", "")


@dataclass(eq=False)
class Subscriber:
    """One connected client's bounded queue."""

    queue_size: int
    filter: ExecutionFilter | None = None
    execution_id: str | None = None
    html: bool = False
    queue: asyncio.Queue[Message] = field(init=False)
    closed: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)

    def offer(self, message: Message) -> None:
        """Queue a message; a full queue closes the subscriber instead of growing."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close()

    def close(self) -> None:
        """End this subscriber's stream at its next read."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSE)


class Hub:
    """The tailer and the subscribers of one process."""

    def __init__(self, store: Store, notifier: Notifier, *, idle_poll_s: float,
                 coalesce_s: float, queue_size: int,
                 render_row: RowRenderer | None = None) -> None:
        self.store = store
        self.notifier = notifier
        self.idle_poll_s = idle_poll_s
        self.coalesce_s = coalesce_s
        self.queue_size = queue_size
        self.render_row = render_row
        self.head = 0
        self._lists: set[Subscriber] = set()
        self._runs: dict[str, set[Subscriber]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    # -- subscribers --------------------------------------------------------
    def subscribe_list(self, flt: ExecutionFilter, html: bool = False) -> Subscriber:
        """A subscriber to changed rows that match ``flt``."""
        sub = Subscriber(self.queue_size, filter=flt, html=html)
        self._lists.add(sub)
        return sub

    def subscribe_run(self, execution_id: str) -> Subscriber:
        """A subscriber to every event of one run."""
        sub = Subscriber(self.queue_size, execution_id=execution_id)
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
            except Exception:
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
        for row in rows:
            subs = self._runs.get(row["execution_id"])
            if subs:
                message = run_message(row)
                for sub in list(subs):
                    sub.offer(message)
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
        encoded: dict[tuple[str, bool], Message] = {}
        for flt, subs in by_filter.items():
            for event_id, row in changed:
                if not flt.matches(row, tools.get(row["id"])):
                    continue
                for sub in subs:
                    key = (row["id"], sub.html)
                    if key not in encoded:
                        encoded[key] = self.list_message(event_id, row, sub.html)
                    sub.offer(encoded[key])

    def list_message(self, event_id: int, row: dict[str, Any], html: bool) -> Message:
        """The ``execution`` message for a changed row (JSON, or the row partial)."""
        if html and self.render_row is not None:
            data = self.render_row(row)
        else:
            data = json.dumps(execution_out(row), separators=(",", ":"))
        return Message(event_id, "execution", data)


def run_message(row: dict[str, Any]) -> Message:
    """The message for one event of a run's own stream."""
    data = row.get("data")
    if not isinstance(data, dict):
        data = {}
    terminal = (
        (row["type"] == "execution.status" and data.get("to") in TERMINAL)
        or (row["type"] == "execution.created" and data.get("status") in TERMINAL)
    )
    return Message(row["id"], row["type"], json.dumps(event_out(row), separators=(",", ":")),
                   terminal)
