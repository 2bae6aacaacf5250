"""Query-string parameters of the list (API, page and streams) into a :class:`ListQuery`.

Strict on purpose: an unknown name or a value that does not parse is a
``bad_parameter`` naming it and what is accepted, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.store.cursor import MAX_CURSOR_CHARS, SORTS
from app.store.errors import BadParameter
from app.store.filters import ExecutionFilter
from app.store.inputs import STATUSES
from app.times import parse_time_param

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
SET_PARAMS = ("status", "not_status", "trigger", "not_trigger", "tool", "not_tool")
LIST_PARAMS = frozenset({
    *SET_PARAMS, "label", "from", "to", "q", "elicitation", "min_duration_ms",
    "max_duration_ms", "sort", "limit", "cursor", "meta",
})
MAX_VALUES = 100


@dataclass(frozen=True)
class ListQuery:
    """A parsed list request. ``cursor`` is the text from ``next_cursor``, still
    unverified: only the store holds the key that signs it, and it checks it
    against ``filter.scope_id`` and ``sort`` (see ``app.store.cursor``)."""

    filter: ExecutionFilter
    sort: str = "created_at:desc"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    meta: bool = True


def _bad(name: str, accepted: str) -> BadParameter:
    return BadParameter(f"{name}: {accepted}", {"parameter": name})


def _split(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return tuple(dict.fromkeys(out))


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _bad(name, "use true or false")


def _int(name: str, value: str, lo: int, hi: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise _bad(name, f"use a whole number from {lo} to {hi}") from None
    if not lo <= number <= hi:
        raise _bad(name, f"use a whole number from {lo} to {hi}")
    return number


def parse_list_params(items: Iterable[tuple[str, str]], *,
                      allowed_extra: frozenset[str] = frozenset(),
                      scope_id: str | None = None, now: int | None = None) -> ListQuery:
    """Parse (name, value) pairs; names in ``allowed_extra`` are left to the caller."""
    grouped: dict[str, list[str]] = {}
    for name, value in items:
        if name not in LIST_PARAMS and name not in allowed_extra:
            raise BadParameter(
                f"unknown parameter {name!r}; accepted: {', '.join(sorted(LIST_PARAMS))}",
                {"parameter": name})
        if "\x00" in value:
            raise _bad(name, "contains a NUL character")
        grouped.setdefault(name, []).append(value)

    def single(name: str) -> str | None:
        values = grouped.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise _bad(name, "give it once")
        return values[0]

    sets: dict[str, tuple[str, ...]] = {}
    for name in SET_PARAMS:
        values = _split(grouped.get(name, []))
        if len(values) > MAX_VALUES:
            raise _bad(name, f"at most {MAX_VALUES} values")
        if name.endswith("status"):
            wrong = [v for v in values if v not in STATUSES]
            if wrong:
                raise _bad(name, f"unknown status {wrong[0]!r}; use {', '.join(STATUSES)}")
        if any(len(v) > 512 for v in values):
            raise _bad(name, "values are at most 512 characters")
        sets[name] = values

    labels: list[tuple[str, str]] = []
    # Each label is one more condition in every query of the list (SQLite refuses
    # a statement past a few hundred): the same cap as the other sets.
    if len(grouped.get("label", [])) > MAX_VALUES:
        raise _bad("label", f"at most {MAX_VALUES} values")
    for value in grouped.get("label", []):
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise _bad("label", "use key=value")
        labels.append((key, val))

    times: dict[str, int | None] = {}
    for name in ("from", "to"):
        raw = single(name)
        if raw is None or raw.strip() == "":
            times[name] = None
            continue
        try:
            times[name] = parse_time_param(raw, now)
        except ValueError as exc:
            raise _bad(name, str(exc)) from None

    elicitation = single("elicitation")
    durations = {name: (None if (raw := single(name)) in (None, "") else
                        _int(name, raw, 0, 2**53))
                 for name in ("min_duration_ms", "max_duration_ms")}
    q = single("q")
    if q is not None and len(q) > 1000:
        raise _bad("q", "at most 1000 characters")

    sort = single("sort") or "created_at:desc"
    if sort not in SORTS:
        raise _bad("sort", f"use one of {', '.join(SORTS)}")
    limit_raw = single("limit")
    limit = DEFAULT_LIMIT if limit_raw is None else _int("limit", limit_raw, 1, MAX_LIMIT)
    cursor = single("cursor") or None
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise _bad("cursor", "not a cursor from next_cursor of this list")
    meta_raw = single("meta")
    meta = (cursor is None) if meta_raw is None else _bool("meta", meta_raw)

    flt = ExecutionFilter(
        status=sets["status"], not_status=sets["not_status"],
        trigger=sets["trigger"], not_trigger=sets["not_trigger"],
        tool=sets["tool"], not_tool=sets["not_tool"],
        label=tuple(labels), from_ms=times["from"], to_ms=times["to"],
        q=q or None,
        elicitation=None if elicitation in (None, "") else _bool("elicitation", elicitation),
        min_duration_ms=durations["min_duration_ms"],
        max_duration_ms=durations["max_duration_ms"],
        scope_id=scope_id,
    )
    return ListQuery(filter=flt, sort=sort, limit=limit, cursor=cursor, meta=meta)
