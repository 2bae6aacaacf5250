"""JSON routes for reading and recording executions and their parts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.body import read_model
from app.api.errors import ApiError
from app.store import Store
from app.store.inputs import (
    EVENT_TYPES,
    LEVELS,
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    IngestBatch,
    InteractionAsk,
    InteractionResolve,
    ToolCallFinish,
    ToolCallStart,
)
from app.store.params import parse_list_params

EVENTS_DEFAULT_LIMIT = 200
EVENTS_MAX_LIMIT = 1000


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _call(request: Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # The store is synchronous (SQLAlchemy Core); keep it off the event loop.
    return await run_in_threadpool(fn, *args, **kwargs)


def _created(name: str, obj: dict[str, Any], created: bool) -> JSONResponse:
    return JSONResponse({name: obj}, status_code=201 if created else 200)


async def list_executions(request: Request) -> JSONResponse:
    query = parse_list_params(request.query_params.multi_items())
    return JSONResponse(await _call(request, _store(request).list_executions, query))


async def get_execution(request: Request) -> JSONResponse:
    execution, pending = await _call(
        request, _store(request).get_execution, request.path_params["execution_id"])
    return JSONResponse({"execution": execution, "pending_interaction": pending})


async def create_execution(request: Request) -> JSONResponse:
    data = await read_model(request, ExecutionCreate)
    obj, created = await _call(request, _store(request).create_execution, data)
    return _created("execution", obj, created)


async def patch_execution(request: Request) -> JSONResponse:
    data = await read_model(request, ExecutionPatch)
    obj = await _call(request, _store(request).update_execution,
                      request.path_params["execution_id"], data)
    return JSONResponse({"execution": obj})


async def list_tool_calls(request: Request) -> JSONResponse:
    _no_params(request)
    rows = await _call(request, _store(request).tool_calls, request.path_params["execution_id"])
    return JSONResponse({"tool_calls": rows})


async def start_tool_call(request: Request) -> JSONResponse:
    data = await read_model(request, ToolCallStart)
    obj, created = await _call(request, _store(request).start_tool_call,
                               request.path_params["execution_id"], data)
    return _created("tool_call", obj, created)


async def finish_tool_call(request: Request) -> JSONResponse:
    data = await read_model(request, ToolCallFinish)
    obj = await _call(request, _store(request).finish_tool_call,
                      request.path_params["execution_id"], request.path_params["tool_call_id"],
                      data)
    return JSONResponse({"tool_call": obj})


async def list_interactions(request: Request) -> JSONResponse:
    _no_params(request)
    rows = await _call(request, _store(request).interactions,
                       request.path_params["execution_id"])
    return JSONResponse({"interactions": rows})


async def ask(request: Request) -> JSONResponse:
    data = await read_model(request, InteractionAsk)
    obj, created = await _call(request, _store(request).ask,
                               request.path_params["execution_id"], data)
    return _created("interaction", obj, created)


async def resolve(request: Request) -> JSONResponse:
    data = await read_model(request, InteractionResolve)
    obj = await _call(request, _store(request).resolve, request.path_params["execution_id"],
                      request.path_params["interaction_id"], data)
    return JSONResponse({"interaction": obj})


def _events_params(request: Request) -> dict[str, Any]:
    allowed = {"after_seq", "limit", "level", "type"}
    grouped: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise ApiError("bad_parameter",
                           f"unknown parameter {name!r}; accepted: {', '.join(sorted(allowed))}",
                           {"parameter": name})
        grouped.setdefault(name, []).append(value)

    def number(name: str, default: int, lo: int, hi: int) -> int:
        values = grouped.get(name)
        if not values:
            return default
        try:
            n = int(values[-1])
        except ValueError:
            n = lo - 1
        if len(values) > 1 or not lo <= n <= hi:
            raise ApiError("bad_parameter", f"{name}: use one whole number from {lo} to {hi}",
                           {"parameter": name})
        return n

    def choices(name: str, accepted: tuple[str, ...]) -> tuple[str, ...]:
        picked = tuple(dict.fromkeys(
            p.strip() for v in grouped.get(name, []) for p in v.split(",") if p.strip()))
        wrong = [p for p in picked if p not in accepted]
        if wrong:
            raise ApiError("bad_parameter",
                           f"{name}: unknown value {wrong[0]!r}; use {', '.join(accepted)}",
                           {"parameter": name})
        return picked

    return {
        "after_seq": number("after_seq", 0, 0, 2**31 - 1),
        "limit": number("limit", EVENTS_DEFAULT_LIMIT, 1, EVENTS_MAX_LIMIT),
        "levels": choices("level", LEVELS),
        "types": choices("type", EVENT_TYPES),
    }


async def list_events(request: Request) -> JSONResponse:
    page = _events_params(request)
    rows, next_after = await _call(request, _store(request).events,
                                   request.path_params["execution_id"], **page)
    return JSONResponse({"events": rows, "next_after_seq": next_after})


async def append_events(request: Request) -> JSONResponse:
    data = await read_model(request, EventsAppend)
    written = await _call(request, _store(request).append_events,
                          request.path_params["execution_id"], data)
    return JSONResponse({"events": written}, status_code=201)


async def ingest(request: Request) -> JSONResponse:
    data = await read_model(request, IngestBatch)
    return JSONResponse(await _call(request, _store(request).ingest, data))


def _no_params(request: Request) -> None:
    for name in request.query_params:
        raise ApiError("bad_parameter", f"unknown parameter {name!r}; this route takes none",
                       {"parameter": name})


EXECUTION = "/api/executions/{execution_id}"
routes = [
    Route("/api/executions", list_executions, methods=["GET"]),
    Route("/api/executions", create_execution, methods=["POST"]),
    Route(EXECUTION, get_execution, methods=["GET"]),
    Route(EXECUTION, patch_execution, methods=["PATCH"]),
    Route(EXECUTION + "/tool-calls", list_tool_calls, methods=["GET"]),
    Route(EXECUTION + "/tool-calls", start_tool_call, methods=["POST"]),
    Route(EXECUTION + "/tool-calls/{tool_call_id}", finish_tool_call, methods=["PATCH"]),
    Route(EXECUTION + "/interactions", list_interactions, methods=["GET"]),
    Route(EXECUTION + "/interactions", ask, methods=["POST"]),
    Route(EXECUTION + "/interactions/{interaction_id}/resolve", resolve, methods=["POST"]),
    Route(EXECUTION + "/events", list_events, methods=["GET"]),
    Route(EXECUTION + "/events", append_events, methods=["POST"]),
    Route("/api/ingest", ingest, methods=["POST"]),
]
