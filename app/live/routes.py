"""The SSE endpoints: ``/api/stream`` (changed rows) and ``/api/executions/{id}/stream``.

Resume: a client sends ``Last-Event-ID`` (browsers do on their own reconnects)
or ``?after=``. The stream subscribes to the hub *first*, then replays what
the table holds after that id, then forwards live messages, skipping any id
it has already sent: nothing lost in the hand-over, nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from app.api.errors import ApiError
from app.live.hub import CLOSE, Hub, Subscriber, run_message
from app.store import Store
from app.store.inputs import TERMINAL
from app.store.params import parse_list_params

PING_S = 15
# A client whose socket accepts nothing for this long is gone.
SEND_TIMEOUT_S = 30
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


def _format(request: Request) -> bool:
    values = request.query_params.getlist("format")
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("json", "html"):
        raise ApiError("bad_parameter", "format: use json or html", {"parameter": "format"})
    return values[0] == "html"


def _sse(message: Any) -> ServerSentEvent:
    return ServerSentEvent(data=message.data, event=message.event, id=str(message.id))


async def list_stream(request: Request) -> EventSourceResponse:
    # A relative `from` is read once, here, at connect.
    query = parse_list_params(request.query_params.multi_items(), allowed_extra=STREAM_EXTRA)
    after = _resume_id(request)
    html = _format(request)
    hub: Hub = request.app.state.hub
    store: Store = request.app.state.store
    if html and hub.render_row is None:
        raise ApiError("bad_parameter", "format=html is not available on this server",
                       {"parameter": "format"})
    sub = hub.subscribe_list(query.filter, html)
    last = hub.head if after is None else after

    async def messages() -> AsyncIterator[ServerSentEvent]:
        nonlocal last
        try:
            if after is not None:
                while True:
                    page, reached = await run_in_threadpool(
                        store.changed_rows_after, last, query, BACKLOG_PAGE)
                    for event_id, row in page:
                        yield _sse(hub.list_message(event_id, row, html))
                        last = max(last, event_id)
                    if reached is None:
                        break
                    last = max(last, reached)
            async for message in _live(sub):
                if message.id > last:
                    last = message.id
                    yield _sse(message)
        finally:
            hub.unsubscribe(sub)

    return EventSourceResponse(messages(), ping=PING_S, send_timeout=SEND_TIMEOUT_S)


async def run_stream(request: Request) -> EventSourceResponse:
    execution_id = request.path_params["execution_id"]
    for name in request.query_params:
        if name != "after":
            raise ApiError("bad_parameter", f"unknown parameter {name!r}; accepted: after",
                           {"parameter": name})
    after = _resume_id(request) or 0
    hub: Hub = request.app.state.hub
    store: Store = request.app.state.store
    # 404 before the stream starts; and read the status before the backlog, so
    # a run seen as ended has all its events in the backlog that follows.
    status = await run_in_threadpool(store.execution_status, execution_id)
    sub = hub.subscribe_run(execution_id)

    def end() -> ServerSentEvent:
        # No id: a client's Last-Event-ID stays at the last real event.
        return ServerSentEvent(data=json.dumps({"execution_id": execution_id}), event="end")

    async def messages() -> AsyncIterator[ServerSentEvent]:
        last = after
        ended = status in TERMINAL
        try:
            while True:
                rows = await run_in_threadpool(
                    store.feed_after, last, BACKLOG_PAGE, execution_id)
                for row in rows:
                    message = run_message(row)
                    yield _sse(message)
                    last = message.id
                    ended = ended or message.terminal
                if len(rows) < BACKLOG_PAGE:
                    break
            if ended:
                yield end()
                return
            async for message in _live(sub):
                if message.id > last:
                    last = message.id
                    yield _sse(message)
                    if message.terminal:
                        yield end()
                        return
        finally:
            hub.unsubscribe(sub)

    return EventSourceResponse(messages(), ping=PING_S, send_timeout=SEND_TIMEOUT_S)


async def _live(sub: Subscriber) -> AsyncIterator[Any]:
    while True:
        message = await sub.queue.get()
        if message is CLOSE:
            return
        yield message


routes: list[BaseRoute] = [
    Route("/api/stream", list_stream, methods=["GET"]),
    Route("/api/executions/{execution_id}/stream", run_stream, methods=["GET"]),
]
