"""Fan-out of the change feed to connected clients.

One tailer task per process reads feed rows after its head (one query per
wake, however many clients), loads the changed runs once, and puts messages on
each subscriber's bounded queue. List subscribers are grouped by their filter,
so a thousand browsers on the default view cost one match per changed run, and
each message body is encoded once and shared.

A client that stops reading fills its queue; it is then closed rather than
buffered without limit, and reconnects with ``Last-Event-ID`` to catch up from
the table. One ticker task keeps every stream alive and honest: a ping every
``PING_S`` to a stream with nothing waiting, and a stream whose send has been
blocked for ``SEND_TIMEOUT_S`` is aborted (``app.live.response`` says why this
is not done per send). On the server's exit signal every stream is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from app.live.messages import (
    Batch,
    EventRenderer,
    Message,
    RowRenderer,
    Subscriber,
    list_message,
    newest_changes,
    run_message,
)
from app.live.notifier import Notifier
from app.store import Store
from app.store.errors import storage_failure
from app.store.filters import ExecutionFilter

log = logging.getLogger("runyard.live")

# A ping comment every this many seconds keeps proxies from closing idle streams.
PING_S = 15.0
# A client whose socket accepts nothing for this long is gone.
SEND_TIMEOUT_S = 30.0

# Feed rows read per query.
FEED_PAGE = 1000

# Coalescing window per open stream, and its ceiling. One read's fan-out costs
# ~15-20 µs of CPU per stream (waking its task, one socket write, with the GIL
# held), plus uvicorn's chunked write of it. In the soak (300 writes/s, 200
# streams) the fan-out was 42% of the server's GIL time with a 2 ms window;
# 2-minute runs alternated on one machine: 2 ms, 103-104% of a core and
# 3,967-20,280 writes refused; 25 ms, 91-96% and 0-403. With two workers of
# 100 streams each (12.5 ms at 0.125 ms a stream), uvicorn's socket writes
# alone were still 11% of the GIL time (py-spy, tenth session): 0.5 ms a
# stream halves them again, and 100 ms at most is still live to a reader. A
# commit after a quiet spell longer than the window is still read at once,
# so a lone write's latency does not change.
COALESCE_PER_STREAM_S = 0.0005
MAX_COALESCE_S = 0.1

# The changed runs' current rows and (when asked) their tool paths, or None.
Changed = tuple[dict[str, dict[str, Any]], dict[str, set[str]]] | None


class Hub:
    """The tailer and the subscribers of one process."""

    def __init__(self, store: Store, notifier: Notifier, *, idle_poll_s: float,
                 coalesce_s: float, queue_size: int, ping_s: float = PING_S,
                 send_timeout_s: float = SEND_TIMEOUT_S,
                 coalesce_per_stream_s: float = COALESCE_PER_STREAM_S,
                 max_coalesce_s: float = MAX_COALESCE_S) -> None:
        self.store = store
        self.notifier = notifier
        self.idle_poll_s = idle_poll_s
        self.coalesce_s = coalesce_s
        self.coalesce_per_stream_s = coalesce_per_stream_s
        self.max_coalesce_s = max_coalesce_s
        self.queue_size = queue_size
        self.ping_s = ping_s
        self.send_timeout_s = send_timeout_s
        self.head = 0
        # Loop time of the last read of the newest event id while nobody listened.
        self._synced = float("-inf")
        # After the exit signal: every stream closed, new ones end at once.
        self.closing = False
        # List subscribers grouped by filter, kept as they come and go: a burst
        # matches each distinct filter once and walks no one else.
        self._lists: dict[ExecutionFilter, set[Subscriber]] = {}
        self._runs: dict[str, set[Subscriber]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []

    # -- subscribers --------------------------------------------------------
    def subscribe_list(self, flt: ExecutionFilter, render: RowRenderer | None = None,
                       render_key: str = "") -> Subscriber:
        """A subscriber to changed rows that match ``flt``."""
        sub = Subscriber(self.queue_size, filter=flt, render=render, render_key=render_key)
        self._lists.setdefault(flt, set()).add(sub)
        if self.closing:
            sub.close()
        return sub

    def subscribe_run(self, execution_id: str,
                      render: EventRenderer | None = None) -> Subscriber:
        """A subscriber to every event of one run."""
        sub = Subscriber(self.queue_size, execution_id=execution_id, render=render)
        self._runs[execution_id].add(sub)
        if self.closing:
            sub.close()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber (its stream ended)."""
        sub.closed = True
        if sub.filter is not None:
            group = self._lists.get(sub.filter)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._lists[sub.filter]
        if sub.execution_id is not None:
            subs = self._runs.get(sub.execution_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._runs[sub.execution_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in (*self._lists.values(), *self._runs.values()))

    def coalesce_window(self) -> float:
        """How long after a read further commits wait to be read together:
        ``coalesce_s``, longer with more streams to write to, at most
        ``max_coalesce_s``."""
        per_streams = self.subscriber_count * self.coalesce_per_stream_s
        return min(self.max_coalesce_s, max(self.coalesce_s, per_streams))

    def subscribers(self) -> list[Subscriber]:
        """Every current subscriber (a copy: closing one changes the sets)."""
        return [s for subs in (*self._lists.values(), *self._runs.values()) for s in subs]

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Begin tailing at the current head of the feed, and keeping streams alive."""
        self.head = await run_in_threadpool(self.store.last_event_id)
        self._tasks = [asyncio.create_task(self._run(), name="runyard-feed-tailer"),
                       asyncio.create_task(self._tick(), name="runyard-live-ticker"),
                       asyncio.create_task(self._close_on_exit(), name="runyard-live-exit")]

    async def stop(self) -> None:
        """Stop tailing and end every stream."""
        self.closing = True
        for sub in self.subscribers():
            sub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self) -> None:
        """Pings and the send watchdog for every stream, from one timer."""
        loop = asyncio.get_running_loop()
        step = min(self.ping_s, self.send_timeout_s) / 3
        next_ping = loop.time() + self.ping_s
        while True:
            await asyncio.sleep(step)
            now = loop.time()
            ping = None
            if now >= next_ping:
                ping, next_ping = Batch.ping(), now + self.ping_s
            for sub in self.subscribers():
                began = sub.sending_since
                if began is not None and now - began > self.send_timeout_s:
                    log.warning("dropping a live client: a send blocked for %.0f s", now - began)
                    sub.abort()
                elif ping is not None:
                    sub.ping(ping)

    async def _close_on_exit(self) -> None:
        """On the server's exit signal (SIGTERM, Ctrl-C), end every stream so the
        server need not wait for them. sse-starlette's signal watcher is shared by
        the process and also finds uvicorn's own exit flag."""
        await EventSourceResponse._listen_for_exit_signal()
        self.closing = True
        for sub in self.subscribers():
            sub.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        done = 0.0  # loop time the last poll ended
        while True:
            if self.notifier.heard <= self.head:
                await self.notifier.wait(self.idle_poll_s)
            # Coalescing: a commit after a quiet spell is read at once; commits
            # that follow a poll within the window wait out the rest of it, so
            # a stream of small writes is read (and sent) in bursts.
            delay = done + self.coalesce_window() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
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
            done = loop.time()

    async def poll_once(self) -> None:
        """Read and dispatch everything after the head (in pages)."""
        if not self._lists and not self._runs:
            # Nobody listens: move the head instead of reading every change
            # (bulk ingest and OTLP spent a quarter of their CPU here). A
            # subscriber that comes later replays from the table anyway.
            now = asyncio.get_running_loop().time()
            if self.notifier.heard > self.head and now - self._synced < self.idle_poll_s:
                # Woken by a commit whose id the notifier heard: no query and
                # no thread hop (0.1-0.3 ms of a live write's CPU, measured by
                # bench/write_path.py --streams 0). Other processes' events
                # (SQLite tells nobody of those) are read within idle_poll_s,
                # as a quiet server reads them.
                self.head = self.notifier.heard
                return
            newest = await run_in_threadpool(self.store.last_event_id)
            self._synced = now
            if not self._lists and not self._runs:  # and none came meanwhile
                self.head = max(self.head, newest)
                return
        while True:
            with_tools = self._needs_tools()
            rows, changed = await run_in_threadpool(
                self._read, self.head, bool(self._lists), with_tools)
            if not rows:
                return
            await self._dispatch(rows, changed, with_tools)
            self.head = rows[-1]["id"]
            if len(rows) < FEED_PAGE:
                return

    def _read(self, head: int, lists: bool,
              with_tools: bool) -> tuple[list[dict[str, Any]], Changed]:
        """In a worker thread: the feed after ``head`` and, for list streams, the
        changed runs' rows, in one hop from the event loop instead of two."""
        rows = self.store.feed_after(head, FEED_PAGE)
        newest = newest_changes(rows)
        if not lists or not newest:
            return rows, None
        return rows, self.store.rows_and_tools(list(newest), with_tools)

    def _needs_tools(self) -> bool:
        return any(flt.tool or flt.not_tool for flt in self._lists)

    async def _dispatch(self, rows: list[dict[str, Any]], changed: Changed = None,
                        with_tools: bool = False) -> None:
        """Offer ``rows`` to run streams and their runs' current rows (``changed``,
        read with them; read here if list streams came or need tools since) to
        list streams."""
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
        newest = newest_changes(rows)
        if not newest:
            return
        needs_tools = self._needs_tools()
        if changed is None or (needs_tools and not with_tools):
            changed = await run_in_threadpool(
                self.store.rows_and_tools, list(newest), needs_tools)
        current, tools = changed
        ordered = sorted((newest[i], r) for i, r in current.items())
        encoded: dict[tuple[str, str], Message] = {}
        for flt, subs in list(self._lists.items()):
            matched = [(i, row) for i, row in ordered if flt.matches(row, tools.get(row["id"]))]
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
