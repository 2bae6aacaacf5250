"""The one filter object behind the JSON list, the page, the facets, the timeline
and the live matcher, and its translation to SQL conditions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true

from app.db.dialect import Dialect, glob_match, json_text_at
from app.db.models import executions, tool_calls

FACETS = ("status", "trigger", "tool", "elicitation")
UNKNOWN_TRIGGER = "unknown"

e = executions.c


@dataclass(frozen=True)
class ExecutionFilter:
    """Every list filter of the contract. Empty sets mean "no constraint"."""

    status: tuple[str, ...] = ()
    not_status: tuple[str, ...] = ()
    trigger: tuple[str, ...] = ()
    not_trigger: tuple[str, ...] = ()
    tool: tuple[str, ...] = ()
    not_tool: tuple[str, ...] = ()
    label: tuple[tuple[str, str], ...] = ()
    from_ms: int | None = None
    to_ms: int | None = None
    q: str | None = None
    elicitation: bool | None = None
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None
    # Set by the caller's credentials, never by a query parameter.
    scope_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def without(self, facet: str) -> ExecutionFilter:
        """This filter minus one facet's include and exclude sets: a facet's
        counts must show what picking another value would give (disjunctive)."""
        if facet == "status":
            return replace(self, status=(), not_status=())
        if facet == "trigger":
            return replace(self, trigger=(), not_trigger=())
        if facet == "tool":
            return replace(self, tool=(), not_tool=())
        if facet == "elicitation":
            return replace(self, elicitation=None)
        raise ValueError(facet)

    def is_empty(self) -> bool:
        """True when no condition applies (a scope counts as a condition)."""
        return not self.conditions(Dialect.SQLITE)

    def conditions(self, dialect: Dialect) -> list[ColumnElement[bool]]:
        """SQL conditions on ``execution``; values are always bound parameters."""
        out: list[ColumnElement[bool]] = []
        if self.scope_id is not None:
            out.append(e.scope_id == self.scope_id)
        if self.status:
            out.append(e.status.in_(self.status))
        if self.not_status:
            out.append(e.status.not_in(self.not_status))
        if self.trigger:
            out.append(_trigger_in(self.trigger))
        if self.not_trigger:
            out.append(_trigger_not_in(self.not_trigger))
        if self.tool:
            out.append(_calls_any(dialect, self.tool))
        if self.not_tool:
            out.append(not_(_calls_any(dialect, self.not_tool)))
        for key, value in self.label:
            out.append(json_text_at(dialect, e.labels, key) == value)
        if self.from_ms is not None:
            out.append(e.created_at >= self.from_ms)
        if self.to_ms is not None:
            out.append(e.created_at < self.to_ms)
        if self.q:
            out.append(or_(*(col.icontains(self.q, autoescape=True)
                             for col in (e.code, e.name, e.error))))
        if self.elicitation is not None:
            out.append(e.had_elicitation == self.elicitation)
        if self.min_duration_ms is not None:
            out.append(e.duration_ms >= self.min_duration_ms)
        if self.max_duration_ms is not None:
            out.append(e.duration_ms <= self.max_duration_ms)
        return out

    def matches(self, row: dict[str, Any], tool_paths: set[str] | None = None) -> bool:
        """The same filter over one row in Python, for the live matcher and tests.

        ``row`` holds database values (times as epoch ms); ``tool_paths`` the
        paths the run has called (needed only when a tool filter is set).
        """
        import fnmatch

        def glob_any(patterns: tuple[str, ...]) -> bool:
            paths = tool_paths or set()
            return any(fnmatch.fnmatchcase(p, g.replace("[", "[[]")) for g in patterns
                       for p in paths)

        trigger = row.get("trigger_kind") or UNKNOWN_TRIGGER
        checks = [
            self.scope_id is None or row.get("scope_id") == self.scope_id,
            not self.status or row["status"] in self.status,
            row["status"] not in self.not_status,
            not self.trigger or trigger in self.trigger,
            trigger not in self.not_trigger,
            not self.tool or glob_any(self.tool),
            not self.not_tool or not glob_any(self.not_tool),
            all((row.get("labels") or {}).get(k) == v for k, v in self.label),
            self.from_ms is None or row["created_at"] >= self.from_ms,
            self.to_ms is None or row["created_at"] < self.to_ms,
            not self.q or any(self.q.lower() in (row.get(c) or "").lower()
                              for c in ("code", "name", "error")),
            self.elicitation is None or bool(row["had_elicitation"]) == self.elicitation,
            self.min_duration_ms is None or (
                row.get("duration_ms") is not None and row["duration_ms"] >= self.min_duration_ms),
            self.max_duration_ms is None or (
                row.get("duration_ms") is not None and row["duration_ms"] <= self.max_duration_ms),
        ]
        return all(checks)


def _trigger_in(values: tuple[str, ...]) -> ColumnElement[bool]:
    named = [v for v in values if v != UNKNOWN_TRIGGER]
    parts: list[ColumnElement[bool]] = []
    if named:
        parts.append(e.trigger_kind.in_(named))
    if UNKNOWN_TRIGGER in values:
        parts.append(e.trigger_kind.is_(None))
    return or_(*parts) if parts else false()


def _trigger_not_in(values: tuple[str, ...]) -> ColumnElement[bool]:
    # Not NOT(_trigger_in): "NULL IN (...)" is NULL, so that would also drop
    # every run without a trigger, which "unknown" not being excluded must keep.
    named = [v for v in values if v != UNKNOWN_TRIGGER]
    if UNKNOWN_TRIGGER in values:
        return and_(e.trigger_kind.is_not(None), e.trigger_kind.not_in(named)) if named \
            else e.trigger_kind.is_not(None)
    return or_(e.trigger_kind.is_(None), e.trigger_kind.not_in(named))


def _calls_any(dialect: Dialect, patterns: tuple[str, ...]) -> ColumnElement[bool]:
    t = tool_calls.c
    matches = or_(*(glob_match(dialect, t.tool_path, p) for p in patterns)) if patterns else true()
    return exists(select(1).where(and_(t.execution_id == e.id, matches)))
