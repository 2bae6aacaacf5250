"""OTLP spans → Runyard rows (see docs/OTLP.md for the rules and an example).

A span is the **execution** of its trace when it has no parent span id, or its
parent is remote (``SPAN_FLAGS_CONTEXT_IS_REMOTE``). Whether a parent is "in
this trace's known spans" cannot be the test: spans arrive in any order, so a
child often comes before its parent. Every other span is a **tool call**.
Ids are derived, never random, so re-sending a span maps to the same rows:
execution ``otel-<trace id>``, tool call ``otel-<trace id>-<span id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from app.limits.values import cut_value, is_cut
from app.otlp.attributes import (
    as_dict,
    as_text,
    bounded,
    clean,
    json_or_text,
    labels_of,
    stored_value,
)

# Bits 8 and 9 of Span.flags: "has is-remote" and "is remote".
_REMOTE_KNOWN, _REMOTE = 0x100, 0x200
# All-zero ids are invalid (the OTLP spec).
_NO_TRACE, _NO_SPAN = bytes(16), bytes(8)
_MAX_EVENTS = 256
_CODE_KEYS = ("runyard.code", "code.function", "code.function.name", "db.statement",
              "db.query.text", "process.command_line")
_TRIGGER_KEY = "runyard.trigger"
_TOOL_KEYS = ("gen_ai.tool.name", "runyard.tool")
_ARG_KEYS = ("gen_ai.tool.call.arguments", "input.value", "runyard.args")
_RESULT_KEYS = ("gen_ai.tool.call.result", "output.value", "runyard.result")
INTERACTION_EVENT = "runyard.interaction"


@dataclass
class Event:
    """A span event as an execution event."""

    type: str
    message: str | None
    level: str
    data: Any
    ts: int | None


@dataclass
class Interaction:
    """A ``runyard.interaction`` span event."""

    id: str
    kind: str
    status: str
    message: str | None
    request: Any
    action: str | None
    response: Any
    created_at: int | None
    resolved_at: int | None


@dataclass
class Part:
    """What every mapped span carries: times, status, events, interactions."""

    span_id: str
    status: str
    error: str | None
    started_at: int | None
    completed_at: int | None
    events: list[Event] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)


@dataclass
class Root(Part):
    """The span that is the execution."""

    name: str = ""
    trigger_kind: str = "otlp"
    trigger_meta: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    labels: dict[str, str] | None = None


@dataclass
class Call(Part):
    """A descendant span: one tool call."""

    id: str = ""
    parent_id: str | None = None
    tool_path: str = ""
    args: Any = None
    result: Any = None


@dataclass
class Trace:
    """The spans of one trace found in one request."""

    trace_id: str
    execution_id: str
    roots: list[Root] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


@dataclass
class Mapped:
    """A whole request mapped, and the spans it had to reject (with why)."""

    traces: list[Trace]
    rejected: int = 0
    reason: str = ""


def execution_id_of(trace_id: str) -> str:
    """The execution id a trace's spans tie to."""
    return f"otel-{trace_id}"


def tool_call_id_of(trace_id: str, span_id: str) -> str:
    """A span's tool call id (the trace id in it keeps ids unique across traces)."""
    return f"otel-{trace_id}-{span_id}"


def _ms(ns: int) -> int | None:
    return ns // 1_000_000 if ns else None


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in attrs and attrs[key] not in (None, ""):
            return attrs.pop(key)
    return None


def _events(span: Span, trace_id: str, span_id: str) -> tuple[list[Event], list[Interaction],
                                                               str | None]:
    """Span events as events and interactions; also the first exception's text."""
    out: list[Event] = []
    asked: list[Interaction] = []
    first_error: str | None = None
    for index, ev in enumerate(span.events[:_MAX_EVENTS]):
        attrs = as_dict(ev.attributes)
        ts = _ms(ev.time_unix_nano)
        if ev.name == INTERACTION_EVENT:
            asked.append(_interaction(attrs, trace_id, span_id, index, ts))
            continue
        if ev.name == "exception":
            text = ": ".join(as_text(attrs[k]) for k in ("exception.type", "exception.message")
                             if attrs.get(k) not in (None, "")) or "exception"
            first_error = first_error or text
            data = {"span_id": span_id, "stacktrace": attrs.pop("exception.stacktrace", None),
                    "attributes": bounded(attrs) or None}
            out.append(Event("log", text, "error", cut_value(data), ts))
            continue
        level = str(attrs.pop("runyard.level", "info"))
        out.append(Event("log", clean(ev.name, 1024) or "event",
                         level if level in ("debug", "info", "warn", "error") else "info",
                         cut_value({"span_id": span_id, "attributes": bounded(attrs) or None}),
                         ts))
    return out, asked, first_error


def _interaction(attrs: dict[str, Any], trace_id: str, span_id: str, index: int,
                 ts: int | None) -> Interaction:
    action = attrs.get("runyard.interaction.action")
    action = action if action in ("accept", "decline", "cancel") else None
    kind = attrs.get("runyard.interaction.kind")
    given_id = attrs.get("runyard.interaction.id")
    return Interaction(
        id=str(given_id)[:128] if given_id else f"otel-{trace_id}-{span_id}-i{index}",
        kind=kind if kind in ("elicitation", "approval") else "elicitation",
        status="resolved" if action else "pending",
        message=_text_or_none(attrs.get("runyard.interaction.message")),
        request=cut_value(json_or_text(attrs.get("runyard.interaction.request"))),
        action=action,
        response=cut_value(json_or_text(attrs.get("runyard.interaction.response"))),
        created_at=ts, resolved_at=ts if action else None)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else as_text(value)


def _status(span: Span, exception: str | None) -> tuple[str, str | None]:
    if span.status.code == Status.STATUS_CODE_ERROR:
        return "failed", clean(span.status.message) or exception or "error"
    return ("completed" if span.end_time_unix_nano else "running"), None


def _cut_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``trigger_meta`` within the value limit. Its ``otlp`` ids stay whole: the
    store finds a re-sent root by them (a cut one would be recorded twice)."""
    if not is_cut(cut_value(meta)):
        return meta
    rest = {key: value for key, value in meta.items() if key != "otlp"}
    return {"otlp": meta["otlp"], "cut": cut_value(rest)}


def _is_root(span: Span) -> bool:
    if not span.parent_span_id:
        return True
    return bool(span.flags & _REMOTE_KNOWN and span.flags & _REMOTE)


def _shared_meta(resource: dict[str, Any], scope: Any) -> dict[str, Any]:
    """The ``trigger_meta`` keys every root of one resource and scope shares."""
    meta: dict[str, Any] = {}
    if "service.name" in resource:
        meta["service.name"] = resource["service.name"]
    if scope.name:
        meta["scope"] = {"name": clean(scope.name, 256),
                         "version": clean(scope.version, 256) or None}
    if resource:
        meta["resource"] = bounded(resource)
    return meta


class _Scope:
    """What the spans of one resource and instrumentation scope share, worked
    out once for all of them (an exporter sends hundreds per scope)."""

    def __init__(self, resource: dict[str, Any], scope: Any) -> None:
        self.scope = scope
        self.meta = _shared_meta(resource, scope)
        self._meta_fits: bool | None = None

    def root_meta(self, trace_id: str, span_id: str) -> dict[str, Any]:
        """A root's ``trigger_meta``. Hex ids have a fixed length, so whether it
        fits the value limit is the same for every root of the scope: measured
        once (encoding it is the costly part of the check)."""
        meta: dict[str, Any] = {"otlp": {"trace_id": trace_id, "span_id": span_id}}
        meta.update(self.meta)
        if self._meta_fits is None:
            self._meta_fits = not is_cut(cut_value(meta))
        return meta if self._meta_fits else _cut_meta(meta)


def _map_span(span: Span, trace_id: str, scope: _Scope) -> Part:
    span_id = span.span_id.hex()
    attrs = as_dict(span.attributes)
    events, asked, exception = (_events(span, trace_id, span_id) if span.events
                                else ([], [], None))
    status, error = _status(span, exception)
    started_at = _ms(span.start_time_unix_nano)
    completed_at = _ms(span.end_time_unix_nano)
    if _is_root(span):
        trigger = _first(attrs, (_TRIGGER_KEY,))
        code = _first(attrs, _CODE_KEYS)
        return Root(span_id=span_id, status=status, error=error, events=events,
                    interactions=asked, name=clean(span.name, 1024) or "span",
                    trigger_kind=clean(as_text(trigger or scope.scope.name or "otlp"), 64),
                    trigger_meta=scope.root_meta(trace_id, span_id),
                    code=None if code is None else as_text(code),
                    labels=labels_of(attrs), started_at=started_at, completed_at=completed_at)
    tool = _first(attrs, _TOOL_KEYS)
    args = _first(attrs, _ARG_KEYS)
    result = _first(attrs, _RESULT_KEYS)
    return Call(span_id=span_id, status=status, error=error, events=events,
                interactions=asked, id=tool_call_id_of(trace_id, span_id),
                parent_id=tool_call_id_of(trace_id, span.parent_span_id.hex()),
                tool_path=clean(as_text(tool or span.name or "span"), 256),
                args=stored_value(args), result=stored_value(result),
                started_at=started_at, completed_at=completed_at)


def map_request(request: ExportTraceServiceRequest) -> Mapped:
    """Group a request's spans by trace and map each (invalid ids are rejected)."""
    traces: dict[str, Trace] = {}
    rejected = 0
    for rs in request.resource_spans:
        resource = as_dict(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = _Scope(resource, ss.scope)
            for span in ss.spans:
                if (len(span.trace_id) != 16 or len(span.span_id) != 8
                        or span.trace_id == _NO_TRACE or span.span_id == _NO_SPAN):
                    rejected += 1
                    continue
                trace_id = span.trace_id.hex()
                trace = traces.get(trace_id)
                if trace is None:
                    trace = traces[trace_id] = Trace(trace_id, execution_id_of(trace_id))
                part = _map_span(span, trace_id, scope)
                if isinstance(part, Root):
                    trace.roots.append(part)
                else:
                    assert isinstance(part, Call)
                    trace.calls.append(part)
    reason = (f"{rejected} span(s) without a valid 16-byte trace id and 8-byte span id"
              if rejected else "")
    return Mapped(list(traces.values()), rejected, reason)
