"""``GET /api/openapi.json``: the OpenAPI 3.1 document of every JSON route.

Request bodies come from the store's input models, so the document cannot drift
from what is validated; response objects are described by the models below.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.store.cursor import SORTS
from app.store.inputs import (
    EVENT_TYPES,
    LEVELS,
    STATUSES,
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    IngestBatch,
    InteractionAsk,
    InteractionResolve,
    JobAction,
    JobSubmit,
    ToolCallFinish,
    ToolCallStart,
)

Time = str | None


class Execution(BaseModel):
    id: str
    scope_id: str
    name: str | None
    status: str
    trigger_kind: str | None
    trigger_meta: Any
    code: str | None
    result: Any
    error: str | None
    exit_code: int | None
    progress_pct: float | None
    progress_stage: str | None
    tool_call_count: int
    had_elicitation: bool
    error_count: int
    warn_count: int
    labels: dict[str, str] | None
    created_at: str
    started_at: Time
    completed_at: Time
    duration_ms: int | None
    updated_at: str
    rerun_of: str | None


class ToolCall(BaseModel):
    id: str
    execution_id: str
    parent_id: str | None
    seq: int
    tool_path: str
    namespace: str
    status: str
    args: Any
    result: Any
    error: str | None
    started_at: Time
    completed_at: Time
    duration_ms: int | None


class Interaction(BaseModel):
    id: str
    execution_id: str
    kind: str
    status: str
    message: str | None
    request: Any
    action: str | None
    response: Any
    created_at: str
    resolved_at: Time


class Event(BaseModel):
    id: int
    execution_id: str
    seq: int
    ts: str
    level: str
    type: str
    message: str | None
    data: Any


class Facet(BaseModel):
    value: str
    count: int


class Bucket(BaseModel):
    start: str
    counts: dict[str, int]


class Timeline(BaseModel):
    bucket_ms: int | None
    from_: str | None = None
    to: str | None
    buckets: list[Bucket]


class Meta(BaseModel):
    total: int
    facets: dict[str, list[Facet]]
    timeline: dict[str, Any]
    duration: dict[str, int | None]


class ExecutionList(BaseModel):
    executions: list[Execution]
    next_cursor: str | None
    meta: Meta | None = None


class ExecutionDetail(BaseModel):
    execution: Execution
    pending_interaction: Interaction | None


class ExecutionWrapped(BaseModel):
    execution: Execution


class ToolCallWrapped(BaseModel):
    tool_call: ToolCall


class InteractionWrapped(BaseModel):
    interaction: Interaction


class ToolCallList(BaseModel):
    tool_calls: list[ToolCall]


class InteractionList(BaseModel):
    interactions: list[Interaction]


class EventPage(BaseModel):
    events: list[Event]
    next_after_seq: int | None


class EventRef(BaseModel):
    id: int
    seq: int


class EventsWritten(BaseModel):
    events: list[EventRef]


class IngestCounts(BaseModel):
    executions: int
    tool_calls: int
    interactions: int
    events: int


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: dict[str, Any]


class Error(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    ok: bool


class JobAccepted(BaseModel):
    execution_id: str
    status: str


_MODELS: list[type[BaseModel]] = [
    ExecutionCreate, ExecutionPatch, ToolCallStart, ToolCallFinish, InteractionAsk,
    InteractionResolve, EventsAppend, IngestBatch, ExecutionList, ExecutionDetail,
    ExecutionWrapped, ToolCallWrapped, InteractionWrapped, ToolCallList, InteractionList,
    EventPage, EventsWritten, IngestCounts, Error, Health,
    JobSubmit, JobAction, JobAccepted,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(Error, "error") for c in codes}


def _param(name: str, schema: dict[str, Any], where: str = "query",
           description: str = "") -> dict[str, Any]:
    out = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if description:
        out["description"] = description
    return out


_STR_SET = {"type": "array", "items": {"type": "string"}}
LIST_PARAMS = [
    _param("status", {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}},
           description="statuses to include (repeat or comma-separate)"),
    _param("not_status", {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}}),
    _param("trigger", _STR_SET, description="trigger kinds; 'unknown' matches none"),
    _param("not_trigger", _STR_SET),
    _param("tool", _STR_SET, description="tool paths or globs (* any run, ? one character)"),
    _param("not_tool", _STR_SET),
    _param("label", _STR_SET, description="key=value; several must all hold"),
    _param("from", {"type": "string"}, description="RFC 3339, epoch ms or -15m style"),
    _param("to", {"type": "string"}),
    _param("q", {"type": "string"}, description="case-insensitive substring of code/name/error"),
    _param("elicitation", {"type": "boolean"}),
    _param("min_duration_ms", {"type": "integer", "minimum": 0}),
    _param("max_duration_ms", {"type": "integer", "minimum": 0}),
    _param("sort", {"type": "string", "enum": list(SORTS)}),
    _param("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
    _param("cursor", {"type": "string"}),
    _param("meta", {"type": "boolean"}),
]
EXEC_ID = _param("execution_id", {"type": "string"}, "path")


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


def build_document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    _, defs = models_json_schema([(m, "validation") for m in _MODELS],
                                 ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    # "from" is a keyword in Python; the wire name is "from".
    timeline = schemas.get("Timeline")
    if timeline:
        timeline["properties"]["from"] = timeline["properties"].pop("from_")
    body_errors = _errors(400, 404, 409, 413, 422)
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Database health", "operationId": "healthz", "security": [],
                             "responses": {"200": _json(Health, "the database answers"),
                                           "503": _json(Error, "it does not")}}},
        "/api/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                "application/json": {"schema": {"type": "object"}}}}}}},
        "/api/executions": {
            "get": {"summary": "List executions", "operationId": "listExecutions",
                    "parameters": LIST_PARAMS,
                    "responses": {"200": _json(ExecutionList, "a page"), **_errors(400)}},
            "post": {"summary": "Create an execution", "operationId": "createExecution",
                     "requestBody": _body(ExecutionCreate),
                     "responses": {"201": _json(ExecutionWrapped, "created"),
                                   "200": _json(ExecutionWrapped, "a harmless retry"),
                                   **_errors(400, 409, 413, 422)}},
        },
        "/api/executions/{execution_id}": {
            "parameters": [EXEC_ID],
            "get": {"summary": "One execution", "operationId": "getExecution",
                    "responses": {"200": _json(ExecutionDetail, "the execution"),
                                  **_errors(404)}},
            "patch": {"summary": "Change an execution", "operationId": "patchExecution",
                      "requestBody": _body(ExecutionPatch),
                      "responses": {"200": _json(ExecutionWrapped, "changed"), **body_errors}},
        },
        "/api/executions/{execution_id}/tool-calls": {
            "parameters": [EXEC_ID],
            "get": {"summary": "Tool calls of an execution", "operationId": "listToolCalls",
                    "responses": {"200": _json(ToolCallList, "in seq order"),
                                  **_errors(400, 404)}},
            "post": {"summary": "Start a tool call", "operationId": "startToolCall",
                     "requestBody": _body(ToolCallStart),
                     "responses": {"201": _json(ToolCallWrapped, "started"),
                                   "200": _json(ToolCallWrapped, "a harmless retry"),
                                   **body_errors}},
        },
        "/api/executions/{execution_id}/tool-calls/{tool_call_id}": {
            "parameters": [EXEC_ID, _param("tool_call_id", {"type": "string"}, "path")],
            "patch": {"summary": "Finish a tool call", "operationId": "finishToolCall",
                      "requestBody": _body(ToolCallFinish),
                      "responses": {"200": _json(ToolCallWrapped, "finished"), **body_errors}},
        },
        "/api/executions/{execution_id}/interactions": {
            "parameters": [EXEC_ID],
            "get": {"summary": "Interactions of an execution",
                    "operationId": "listInteractions",
                    "responses": {"200": _json(InteractionList, "oldest first"),
                                  **_errors(400, 404)}},
            "post": {"summary": "Ask a person", "operationId": "askInteraction",
                     "requestBody": _body(InteractionAsk),
                     "responses": {"201": _json(InteractionWrapped, "asked"),
                                   "200": _json(InteractionWrapped, "a harmless retry"),
                                   **body_errors}},
        },
        "/api/executions/{execution_id}/interactions/{interaction_id}/resolve": {
            "parameters": [EXEC_ID, _param("interaction_id", {"type": "string"}, "path")],
            "post": {"summary": "Answer an interaction", "operationId": "resolveInteraction",
                     "requestBody": _body(InteractionResolve),
                     "responses": {"200": _json(InteractionWrapped, "answered"),
                                   **body_errors}},
        },
        "/api/executions/{execution_id}/events": {
            "parameters": [EXEC_ID],
            "get": {"summary": "Events of an execution", "operationId": "listEvents",
                    "parameters": [
                        _param("after_seq", {"type": "integer", "minimum": 0}),
                        _param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                        _param("level", {"type": "array",
                                         "items": {"type": "string", "enum": list(LEVELS)}}),
                        _param("type", {"type": "array",
                                        "items": {"type": "string", "enum": list(EVENT_TYPES)}}),
                    ],
                    "responses": {"200": _json(EventPage, "in seq order"),
                                  **_errors(400, 404)}},
            "post": {"summary": "Append events", "operationId": "appendEvents",
                     "requestBody": _body(EventsAppend),
                     "responses": {"201": _json(EventsWritten, "their ids and seqs"),
                                   **body_errors}},
        },
        "/api/ingest": {
            "post": {"summary": "Bulk import of history", "operationId": "ingest",
                     "requestBody": _body(IngestBatch),
                     "responses": {"200": _json(IngestCounts, "rows newly written"),
                                   **_errors(400, 409, 413, 422)}},
        },
    }
    paths.update(_job_paths())
    paths.update(_otlp_paths())
    # Answering a job's approval runs or cancels a command: 403 when that is off.
    resolve = paths["/api/executions/{execution_id}/interactions/{interaction_id}/resolve"]
    resolve["post"]["responses"]["403"] = _json(Error, "a job's approval, and running "
                                                "commands is not allowed")
    _add_common_responses(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Runyard", "version": "0.1.0",
                 "description": "Record and read executions, tool calls, interactions "
                                "and events."},
        "paths": paths,
        # Once any token exists every route but /healthz needs one; before
        # that a loopback client needs none, hence the empty alternative.
        "security": [{"bearer": []}, {}],
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer",
                           "description": "a token from `runyard token create`"}}},
    }


# What any route but /healthz may answer whatever its own outcome: no or a wrong
# token (once tokens exist), a token without the role or scope, the request rate,
# a busy server, and a database that cannot take writes (disk full, read-only)
# or does not answer.
COMMON_RESPONSES = {
    "401": "no token, or one that is unknown or revoked (once any token exists)",
    "403": "the token lacks the role this route needs, or the row is outside its scope",
    "429": "over the request rate of this token (or address); see Retry-After",
    "503": "the server is busy (`overloaded`), or the database cannot take the write or "
           "does not answer; see Retry-After",
}


def _add_common_responses(paths: dict[str, Any]) -> None:
    """Every operation but the public health check documents the common answers."""
    for path, item in paths.items():
        if path == "/healthz":
            continue
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            for code, description in COMMON_RESPONSES.items():
                # A route's own description (e.g. the job routes' 403) says more.
                responses.setdefault(code, _json(Error, description))


def _job_paths() -> dict[str, Any]:
    """Running commands (issue 5): 403 whenever the server does not allow it."""
    action = {"required": False, "content": {"application/json": {"schema": _ref(JobAction)}}}

    def on_execution(summary: str, op: str, answer: str, *codes: int) -> dict[str, Any]:
        return {"parameters": [EXEC_ID], "post": {
            "summary": summary, "operationId": op, "requestBody": action,
            "responses": {"202": _json(JobAccepted, answer), **_errors(400, 403, 404, *codes)}}}

    return {
        "/api/jobs": {"post": {
            "summary": "Run a command as a job", "operationId": "submitJob",
            "requestBody": _body(JobSubmit),
            "responses": {"202": _json(JobAccepted, "queued, or waiting for approval"),
                          "200": _json(JobAccepted, "the same idempotency_key again"),
                          **_errors(400, 403, 413, 422)}}},
        "/api/executions/{execution_id}/approve": on_execution(
            "Approve a job waiting for approval", "approveJob", "queued", 409, 422),
        "/api/executions/{execution_id}/reject": on_execution(
            "Decline a job waiting for approval", "rejectJob", "cancelled", 409, 422),
        "/api/executions/{execution_id}/cancel": on_execution(
            "Cancel a queued or running job", "cancelJob",
            "cancelled, or (running) the cancel was sent to its worker", 409, 422),
        "/api/executions/{execution_id}/rerun": on_execution(
            "Run a job's command again", "rerunJob", "the new execution", 409, 422),
    }


def _otlp_paths() -> dict[str, Any]:
    """OTLP/HTTP trace ingest (issue 6): bodies and answers are OTLP messages."""
    otlp_types = {"application/x-protobuf": {"schema": {"type": "string",
                                                        "format": "binary"}},
                  "application/json": {"schema": {"type": "object"}}}
    return {"/v1/traces": {"post": {
        "summary": "OTLP/HTTP trace export (ExportTraceServiceRequest, gzip allowed)",
        "operationId": "exportTraces",
        "requestBody": {"required": True, "content": otlp_types},
        "responses": {
            "200": {"description": "ExportTraceServiceResponse (partial_success when "
                                   "spans were rejected)", "content": otlp_types},
            "400": {"description": "google.rpc.Status: the body could not be decoded",
                    "content": otlp_types},
            "413": {"description": "the body (or its decompressed form) is too large",
                    "content": otlp_types},
            "415": _json(Error, "not application/x-protobuf or application/json")}}}}


async def openapi(request: Request) -> JSONResponse:
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = request.app.state.openapi = build_document()
    return JSONResponse(document)


routes = [Route("/api/openapi.json", openapi, methods=["GET"])]
