"""JSON routes for reading and recording executions and their parts.

Every route acts for ``principal_of(request)``: reads see only its
``read_scope`` (another scope's run is a 404, like a missing one), creates
land in its ``write_scope``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.body import read_checked, read_model
from app.api.errors import ApiError
from app.api.live_writes import LiveWriter
from app.auth.principal import principal_of
from app.exec_policy import exec_refusal
from app.store import Store, writes
from app.store.errors import execution_not_found
from app.store.inputs import (
    EVENT_TYPES,
    LEVELS,
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    InteractionAsk,
    InteractionResolve,
    ToolCallFinish,
    ToolCallStart,
    parse_ingest,
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


async def _write(request: Request, op: writes.WriteOp[Any]) -> Any:
    # Concurrent writes share a transaction (app.api.live_writes).
    writer: LiveWriter = request.app.state.live_writer
    return await writer.submit(op)


def _scope(request: Request) -> str | None:
    """The scope this request may read and change (None: every scope)."""
    return principal_of(request).read_scope


def _execution_id(request: Request) -> str:
    """The execution id of the path. Ids never hold NUL, and PostgreSQL fails on
    one instead of finding nothing, so such an id is answered here."""
    execution_id: str = request.path_params["execution_id"]
    if "\x00" in execution_id:
        raise execution_not_found(execution_id)
    return execution_id


async def _part_id(request: Request, name: str, code: str, what: str) -> str:
    """A tool call or interaction id of the path, NUL-checked like the execution id."""
    execution_id = _execution_id(request)
    part_id: str = request.path_params[name]
    if "\x00" in part_id:
        # An unknown execution is still the 404 to give.
        await _call(request, _store(request).get_execution, execution_id,
                    scope_id=_scope(request))
        raise ApiError(code, f"no {what} {part_id!r} in execution {execution_id!r}",
                       {"execution_id": execution_id, name: part_id})
    return part_id


def _created(name: str, obj: dict[str, Any], created: bool) -> JSONResponse:
    return JSONResponse({name: obj}, status_code=201 if created else 200)


async def list_executions(request: Request) -> JSONResponse:
    query = parse_list_params(request.query_params.multi_items(), scope_id=_scope(request))
    return JSONResponse(await _call(request, _store(request).list_executions, query))


async def get_execution(request: Request) -> JSONResponse:
    execution, pending = await _call(
        request, _store(request).get_execution, _execution_id(request),
        scope_id=_scope(request))
    return JSONResponse({"execution": execution, "pending_interaction": pending})


async def create_execution(request: Request) -> JSONResponse:
    data = await read_model(request, ExecutionCreate)
    obj, created = await _write(request, writes.create_execution(
        data, principal_of(request).write_scope))
    return _created("execution", obj, created)


async def patch_execution(request: Request) -> JSONResponse:
    data = await read_model(request, ExecutionPatch)
    obj = await _write(request, writes.update_execution(
        _execution_id(request), data, _scope(request)))
    return JSONResponse({"execution": obj})


async def list_tool_calls(request: Request) -> JSONResponse:
    _no_params(request)
    rows = await _call(request, _store(request).tool_calls, _execution_id(request),
                       scope_id=_scope(request))
    return JSONResponse({"tool_calls": rows})


async def start_tool_call(request: Request) -> JSONResponse:
    data = await read_model(request, ToolCallStart)
    obj, created = await _write(request, writes.start_tool_call(
        _execution_id(request), data, _scope(request)))
    return _created("tool_call", obj, created)


async def finish_tool_call(request: Request) -> JSONResponse:
    data = await read_model(request, ToolCallFinish)
    tool_call_id = await _part_id(request, "tool_call_id", "tool_call_not_found", "tool call")
    obj = await _write(request, writes.finish_tool_call(
        _execution_id(request), tool_call_id, data, _scope(request)))
    return JSONResponse({"tool_call": obj})


async def list_interactions(request: Request) -> JSONResponse:
    _no_params(request)
    rows = await _call(request, _store(request).interactions,
                       _execution_id(request), scope_id=_scope(request))
    return JSONResponse({"interactions": rows})


async def ask(request: Request) -> JSONResponse:
    data = await read_model(request, InteractionAsk)
    obj, created = await _write(request, writes.ask(
        _execution_id(request), data, _scope(request)))
    return _created("interaction", obj, created)


async def resolve(request: Request) -> JSONResponse:
    data = await read_model(request, InteractionResolve)
    interaction_id = await _part_id(request, "interaction_id", "interaction_not_found",
                                    "interaction")
    # A job's approval runs or cancels a command: the job routes' rules apply (issue 5).
    if await _call(request, _store(request).is_job_gate, _execution_id(request),
                   interaction_id, scope_id=_scope(request)):
        refusal = exec_refusal(request)
        if refusal is not None:
            raise ApiError("forbidden", *refusal)
    obj = await _call(request, _store(request).resolve, _execution_id(request),
                      interaction_id, data, scope_id=_scope(request),
                      actor=principal_of(request).actor)
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
                                   _execution_id(request), scope_id=_scope(request), **page)
    return JSONResponse({"events": rows, "next_after_seq": next_after})


async def append_events(request: Request) -> JSONResponse:
    data = await read_model(request, EventsAppend)
    written = await _write(request, writes.append_events(
        _execution_id(request), data, _scope(request)))
    return JSONResponse({"events": written}, status_code=201)


async def ingest(request: Request) -> JSONResponse:
    data = await read_checked(request, parse_ingest)
    return JSONResponse(await _call(request, _store(request).ingest, data,
                                    principal_of(request).write_scope))


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
