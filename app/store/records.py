"""Database rows to the JSON objects of the contract (times as RFC 3339 strings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.times import format_ms

EXECUTION_FIELDS = (
    "id", "scope_id", "name", "status", "trigger_kind", "trigger_meta", "code", "result",
    "error", "exit_code", "progress_pct", "progress_stage", "tool_call_count",
    "had_elicitation", "error_count", "warn_count", "labels", "created_at", "started_at",
    "completed_at", "duration_ms", "updated_at", "rerun_of",
)
TOOL_CALL_FIELDS = (
    "id", "execution_id", "parent_id", "seq", "tool_path", "namespace", "status", "args",
    "result", "error", "started_at", "completed_at", "duration_ms",
)
INTERACTION_FIELDS = (
    "id", "execution_id", "kind", "status", "message", "request", "action", "response",
    "created_at", "resolved_at",
)
EVENT_FIELDS = ("id", "execution_id", "seq", "ts", "level", "type", "message", "data")

_TIME_FIELDS = frozenset(
    {"created_at", "started_at", "completed_at", "updated_at", "resolved_at", "ts"}
)


def to_wire(row: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """One row as its contract object."""
    out: dict[str, Any] = {}
    for name in fields:
        value = row[name]
        if name in _TIME_FIELDS:
            value = format_ms(value)
        elif name == "had_elicitation":
            value = bool(value)
        out[name] = value
    return out


def execution_out(row: Mapping[str, Any]) -> dict[str, Any]:
    return to_wire(row, EXECUTION_FIELDS)


def tool_call_out(row: Mapping[str, Any]) -> dict[str, Any]:
    return to_wire(row, TOOL_CALL_FIELDS)


def interaction_out(row: Mapping[str, Any]) -> dict[str, Any]:
    return to_wire(row, INTERACTION_FIELDS)


def event_out(row: Mapping[str, Any]) -> dict[str, Any]:
    return to_wire(row, EVENT_FIELDS)
