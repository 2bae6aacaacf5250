"""The detail drawer's view model: header, tabs, the tool-call waterfall, values.

Recorded values (code, args, results, messages) reach the template as plain
strings, cut at 64 KB with a link that fetches the rest; Jinja escapes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from app.times import now_ms
from app.web import format as fmt
from app.web.context import TABS, PageState

TAB_TITLES = {"overview": "Overview", "tools": "Tool calls", "interactions": "Interactions",
              "events": "Events"}
LEVEL_FILTERS = (("All", ""), ("Info+", "info,warn,error"), ("Warn+", "warn,error"),
                 ("Errors", "error"))
MAX_DEPTH = 8


@dataclass(frozen=True)
class Value:
    """A recorded value as display text, and where to fetch all of it when cut."""

    text: str
    cut: bool
    full_href: str
    size: int


@dataclass
class Call:
    row: dict[str, Any]
    depth: int
    offset: float     # percent of the run's span
    width: float
    detail_href: str  # args, result and error, fetched when the row is opened


@dataclass
class Drawer:
    run: dict[str, Any]
    tab: str
    tabs: list[tuple[str, str, str, int | None]]   # key, title, href, count
    close_href: str
    self_href: str
    counts: dict[str, int]
    code_lines: list[str] = field(default_factory=list)
    code: Value | None = None
    result: Value | None = None
    error: Value | None = None
    trigger_meta: Value | None = None
    calls: list[Call] = field(default_factory=list)
    span_ms: int = 0
    interactions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    more_events_href: str | None = None
    # The newest event of the run when drawn: where its live trace resumes.
    last_event_id: int = 0
    level_filters: list[tuple[str, str, bool]] = field(default_factory=list)


def value(run_id: str, part: str, ref: str, raw: Any) -> Value | None:
    """A value ready to show; None when nothing was recorded."""
    if raw is None:
        return None
    text = fmt.json_text(raw)
    shown, was_cut = fmt.cut(text)
    href = f"/runs/{quote(run_id, safe='')}/value?" + urlencode({"part": part, "ref": ref})
    return Value(shown, was_cut, href, len(text))


def _tree(calls: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Calls in depth-first order under their parents (seq order among siblings)."""
    ids = {c["id"] for c in calls}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for c in calls:
        parent = c["parent_id"] if c["parent_id"] in ids and c["parent_id"] != c["id"] else None
        children.setdefault(parent, []).append(c)
    out: list[tuple[dict[str, Any], int]] = []
    seen: set[str] = set()
    stack = [(c, 0) for c in reversed(children.get(None, []))]
    while stack:
        call, depth = stack.pop()
        if call["id"] in seen:     # a cycle in recorded parents must not loop forever
            continue
        seen.add(call["id"])
        out.append((call, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(call["id"], [])))
    out.extend((c, 0) for c in calls if c["id"] not in seen)
    return out


def waterfall(run: dict[str, Any], calls: list[dict[str, Any]]) -> tuple[list[Call], int]:
    """One bar per call, offset by its start within the run, nested by parent."""
    now = now_ms()
    starts = [c["started_at"] for c in calls if c["started_at"] is not None]
    begin = min([*starts, run["started_at"]] if run["started_at"] is not None else starts or [0])
    ends = [c["completed_at"] or now for c in calls] + [run["completed_at"] or begin]
    span = max(max(ends, default=begin) - begin, 1)
    base = f"/runs/{quote(run['id'], safe='')}/tool-calls/"
    out = []
    for call, depth in _tree(calls):
        start = call["started_at"] if call["started_at"] is not None else begin
        end = call["completed_at"] or (now if call["status"] == "running" else start)
        offset = min(max((start - begin) / span * 100, 0), 99.7)
        width = min(max((end - start) / span * 100, 0.3), 100 - offset)
        out.append(Call(call, min(depth, MAX_DEPTH), round(offset, 3), round(width, 3),
                        f"{base}{quote(call['id'], safe='')}"))
    return out, span


def build(state: PageState, detail: dict[str, Any], events_limit: int) -> Drawer:
    """The drawer for ``state.run`` from the store's ``run_detail``."""
    run = detail["execution"]
    rid = run["id"]
    counts = {"tools": run["tool_call_count"], "interactions": detail["interaction_count"],
              "events": detail["event_total"], "pending": detail["pending_count"]}
    tabs = [(key, TAB_TITLES[key],
             state.href(tab=None if key == "overview" else key, ev_level=None),
             counts.get(key)) for key in TABS]
    drawer = Drawer(run=run, tab=state.tab, tabs=tabs,
                    close_href=state.href(run=None, tab=None, ev_level=None),
                    self_href=state.href(), counts=counts,
                    last_event_id=detail["last_event_id"])
    if state.tab == "overview":
        drawer.code = value(rid, "execution", "code", run["code"])
        if drawer.code:
            drawer.code_lines = drawer.code.text.removesuffix("\n").split("\n")
        drawer.result = value(rid, "execution", "result", run["result"])
        drawer.error = value(rid, "execution", "error", run["error"])
        drawer.trigger_meta = value(rid, "execution", "trigger_meta", run["trigger_meta"])
    elif state.tab == "tools":
        drawer.calls, drawer.span_ms = waterfall(run, detail["tool_calls"])
    elif state.tab == "interactions":
        drawer.interactions = [
            {**i, "request_v": value(rid, "interaction", f"{i['id']}:request", i["request"]),
             "response_v": value(rid, "interaction", f"{i['id']}:response", i["response"])}
            for i in detail["interactions"]]
    else:
        drawer.events = events_view(rid, detail["events"])
        drawer.more_events_href = more_href(state, detail["next_after_seq"])
        current = ",".join(state.ev_levels)
        drawer.level_filters = [(label, state.href(ev_level=levels or None, tab="events"),
                                 levels == current) for label, levels in LEVEL_FILTERS]
    return drawer


def tool_call_values(run_id: str, call: dict[str, Any]) -> dict[str, Value | None]:
    """A tool call's args, result and error as display values."""
    return {name: value(run_id, "tool_call", f"{call['id']}:{name}", call[name])
            for name in ("args", "result", "error")}


def events_view(run_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Console rows with their message and data as (cut) display values."""
    return [{**r, "message_v": value(run_id, "event", f"{r['seq']}:message", r["message"]),
             "data_v": value(run_id, "event", f"{r['seq']}:data", r["data"])} for r in rows]


def more_href(state: PageState, next_after: int | None) -> str | None:
    """The console's next page, or None at the end."""
    if next_after is None:
        return None
    return state.href(tab="events") + f"&ev_after={next_after}"
