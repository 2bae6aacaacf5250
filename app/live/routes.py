"""The SSE endpoints: ``/api/stream`` (changed rows) and ``/api/executions/{id}/stream``.

Resume: a client sends ``Last-Event-ID`` (browsers do on their own reconnects)
or ``?after=``. The stream subscribes to the hub *first*, then replays what
the table holds after that id, then forwards live messages, skipping any id
it has already sent: nothing lost in the hand-over, nothing twice.

Each stream is a ``StreamResponse`` (``app.live.response``): sse-starlette's
wire format and pings, without its per-send cost.

Scopes: the list stream's filter carries the principal's ``read_scope`` (so
the hub's matcher drops other scopes' rows), and a run stream of another
scope's run is the same 404 as one of a missing run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from app.api.errors import ApiError
from app.auth.principal import principal_of
from app.live.hub import Hub
from app.live.messages import (
    Batch,
    EventRenderer,
    Message,
    RowRenderer,
    list_message,
    run_message,
)
from app.live.response import StreamResponse
from app.store import Store
from app.store.inputs import TERMINAL
from app.store.params import parse_list_params

BACKLOG_PAGE = 500
STREAM_EXTRA = frozenset({"format", "after"})


def _resume_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise ApiError("bad_parameter",
                       "after / Last-Event-ID: use an event id (a whole number) from a stream",
                       {"parameter": "after"})
    return value


class HtmlRenderings(Protocol):
    """What the web layer provides for ``format=html`` streams."""

    def row_renderer(self, items: list[tuple[str, str]]) -> tuple[str, RowRenderer]:
        """A renderer of list rows for a page showing ``items``, and a key naming it."""

    def event_renderer(self, execution_id: str) -> EventRenderer:
        """A renderer of one run's trace events (from the event alone: it runs on
        the event loop, so it must not read the database)."""


def _html(request: Request) -> HtmlRenderings | None:
    if not _format(request):
        return None
    renderings: HtmlRenderings | None = getattr(request.app.state, "live_html", None)
    if renderings is None:
        raise ApiError("bad_parameter", "format=html is not available on this server",
                       {"parameter": "format"})
    return renderings


def _format(request: Request) -> bool:
    values = request.query_params.getlist("format")
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("json", "html"):
        raise ApiError("bad_parameter", "format: use json or html", {"parameter": "format"})
    return values[0] == "html"


async def list_stream(request: Request) -> StreamResponse:
    # A relative `from` is read once, here, at connect.
    query = parse_list_params(request.query_params.multi_items(), allowed_extra=STREAM_EXTRA,
                              scope_id=principal_of(request).read_scope)
    after = _resume_id(request)
    html = _html(request)
    hub: Hub = request.app.state.hub
    store: Store = request.app.state.store
    render: RowRenderer | None = None
    key = ""
    if html is not None:
        page = [(n, v) for n, v in request.query_params.multi_items() if n not in STREAM_EXTRA]
        key, render = html.row_renderer(page)
    sub = hub.subscribe_list(query.filter, render, key)
    last = hub.head if after is None else after

    async def messages() -> AsyncIterator[bytes]:
        nonlocal last
        if after is not None:
            # The whole backlog even if the queue fills meanwhile (the stream
            # then ends after it and the client resumes); not past shutdown.
            while not hub.closing:
                page, reached = await run_in_threadpool(
                    store.changed_rows_after, last, query, BACKLOG_PAGE)
                if page:
                    yield b"".join(list_message(i, row, render).wire for i, row in page)
                    last = max(last, *(i for i, _ in page))
                if reached is None:
                    break
                last = max(last, reached)
        while (batches := await sub.take()) is not None:
            fresh, last = unsent(batches, last)
            if fresh:
                yield fresh

    return StreamResponse(messages(), hub, sub)


async def run_stream(request: Request) -> StreamResponse:
    execution_id = request.path_params["execution_id"]
    for name in request.query_params:
        if name not in ("after", "format"):
            raise ApiError("bad_parameter",
                           f"unknown parameter {name!r}; accepted: after, format",
                           {"parameter": name})
    after = _resume_id(request) or 0
    html = _html(request)
    hub: Hub = request.app.state.hub
    store: Store = request.app.state.store
    # 404 before the stream starts; and read the status before the backlog, so
    # a run seen as ended has all its events in the backlog that follows.
    status = await run_in_threadpool(store.execution_status, execution_id,
                                     scope_id=principal_of(request).read_scope)
    render = html.event_renderer(execution_id) if html is not None else None
    sub = hub.subscribe_run(execution_id, render)

    # No id: a client's Last-Event-ID stays at the last real event.
    end = ServerSentEvent(data=json.dumps({"execution_id": execution_id}), event="end").encode()

    def encode(rows: list[dict[str, Any]]) -> list[Message]:
        return [run_message(row, render) for row in rows]

    async def messages() -> AsyncIterator[bytes]:
        last = after
        ended = status in TERMINAL
        while not hub.closing:
            rows = await run_in_threadpool(store.feed_after, last, BACKLOG_PAGE, execution_id)
            # One thread hop per page: rendering may be slow, but not per event.
            page = await run_in_threadpool(encode, rows)
            if page:
                yield b"".join(m.wire for m in page)
                last = page[-1].id
                ended = ended or any(m.terminal for m in page)
            if len(rows) < BACKLOG_PAGE:
                break
        if hub.closing:
            return  # not `end`: the backlog may have been cut short
        if ended:
            yield end
            return
        while (batches := await sub.take()) is not None:
            parts: list[bytes] = []
            for batch in batches:
                if not batch.messages:  # a ping
                    parts.append(batch.wire)
                for m in batch.messages:
                    if m.id > last:
                        parts.append(m.wire)
                        last = m.id
                        ended = ended or m.terminal
            if ended:
                # The terminal status's transaction may hold more events after
                # it (a PATCH that sets status, progress and exit code): send
                # what the table holds, as a client connecting now would get.
                while True:
                    rows = await run_in_threadpool(store.feed_after, last, BACKLOG_PAGE,
                                                   execution_id)
                    parts.extend(m.wire for m in await run_in_threadpool(encode, rows))
                    if rows:
                        last = rows[-1]["id"]
                    if len(rows) < BACKLOG_PAGE:
                        break
                yield b"".join(parts) + end
                return
            if parts:
                yield b"".join(parts)

    return StreamResponse(messages(), hub, sub)


def unsent(batches: list[Batch], last: int) -> tuple[bytes, int]:
    """The bytes of every message after ``last`` (whole shared batches where
    possible) and of any ping, and the new ``last``."""
    parts: list[bytes] = []
    for batch in batches:
        if not batch.messages or batch.messages[0].id > last:
            parts.append(batch.wire)
        else:
            parts.extend(m.wire for m in batch.messages if m.id > last)
        if batch.messages:
            last = max(last, batch.messages[-1].id)
    return b"".join(parts), last


routes: list[BaseRoute] = [
    Route("/api/stream", list_stream, methods=["GET"]),
    Route("/api/executions/{execution_id}/stream", run_stream, methods=["GET"]),
]
