"""Fill a :class:`PageContext` with only what the requested fragment shows.

A cursor page needs rows and nothing else; the rail needs ``meta``; the drawer
needs one run. Each fragment pays only for its own reads.

The reader's scope rides in the state's filter (:func:`scoped`): the list,
facets and timeline apply it as a filter, and every other read here (the
drawer, the console, the tool names) passes it to the store, so a page never
shows, counts or names another scope's runs.
"""

from __future__ import annotations

from dataclasses import replace

from app.store import Store
from app.store.errors import NotFound
from app.times import format_ms, now_ms
from app.web import chart, drawer, rail, urls
from app.web.context import PageContext, PageState

EVENTS_PAGE = 200
TOOL_SCAN_CAP = 5000
MATCHING_TOOLS = 200

LIST_FRAGMENTS = frozenset({None, "_view.html", "_list.html", "_rows.html"})
META_FRAGMENTS = frozenset({None, "_view.html", "_rail.html", "_chart.html"})


def scoped(state: PageState, scope_id: str | None) -> PageState:
    """``state`` limited to the runs of ``scope_id`` (None: every scope)."""
    query = state.query
    return replace(state, query=replace(query, filter=replace(query.filter,
                                                              scope_id=scope_id)))


def _scope(state: PageState) -> str | None:
    return state.query.filter.scope_id


def _rows(store: Store, ctx: PageContext) -> None:
    state = ctx.state
    rows, cursor = store.list_rows(state.query)
    ctx.rows = rows
    if cursor:
        extra = [("cursor", cursor)]
        if ctx.extra.get("slow_ms"):
            extra.append(("slow", str(ctx.extra["slow_ms"])))
        items = [*urls.without(state.items, "run", "tab", "ev_level"), *extra]
        if state.default_range:
            # Keep the window the first page used, not a fresh "now - 24h".
            items.append(("from", str(state.query.filter.from_ms)))
        ctx.next_href = urls.href(items)


def _live_url(state: PageState, after: int) -> str:
    """The list stream for this view: its filters (the page's 24 h default
    included, read once when the stream connects), as HTML, from ``after``."""
    items = [*state.filter_items]
    if state.default_range:
        items.append(("from", "-24h"))
    query = urls.href([*items, ("format", "html"), ("after", str(after))]).split("?", 1)[1]
    return "/api/stream?" + query


def _tools(store: Store, state: PageState) -> list[dict[str, object]] | None:
    if not state.tool_q:
        return None
    needle = state.tool_q.lower()
    paths = [p for p in store.known_values("tool", TOOL_SCAN_CAP, scope_id=_scope(state))
             if needle in p.lower()]
    return store.tool_counts(state.query.filter, paths[:MATCHING_TOOLS])


def fill(store: Store, ctx: PageContext, fragment: str | None) -> PageContext:
    """Read what ``fragment`` (None: the whole page) needs into ``ctx``."""
    state = ctx.state
    ctx.now = now_ms()
    if fragment in META_FRAGMENTS:
        meta = store.page_meta(state.query.filter)
        ctx.meta, ctx.total = meta, meta["total"]
        ctx.extra["slow_ms"] = meta["slow_ms"]
        overflow = len(store.known_values("tool", 21, scope_id=_scope(state))) > 20
        ctx.rail = rail.build(state, meta["facets"], tool_overflow=overflow,
                              tool_matches=_tools(store, state))
        ctx.chart = chart.build(meta["timeline"])
        _zoom_links(ctx)
    elif fragment == "_rail_tools.html":
        ctx.rail = rail.build(state, {}, tool_overflow=True, tool_matches=_tools(store, state))
    else:
        ctx.extra["slow_ms"] = state.slow_ms
    if fragment == "_list.html":
        ctx.total = store.count_runs(state.query.filter)
    if state.live and fragment in (None, "_view.html", "_list.html"):
        # Read the feed's head before the rows: a change that lands between the
        # two is streamed (and swapped in by id) rather than lost.
        ctx.extra["live_url"] = _live_url(state, store.last_event_id())
    if fragment in LIST_FRAGMENTS:
        _rows(store, ctx)
    if state.run and fragment in (None, "_view.html", "_drawer.html"):
        fill_drawer(store, ctx)
    return ctx


def _zoom_links(ctx: PageContext) -> None:
    """Zoom out (twice the span, same centre) and reset, when a custom range is set."""
    state, flt = ctx.state, ctx.state.query.filter
    given = dict(state.items)
    if "to" not in given and given.get("from", "-")[:1] in ("-", ""):
        return
    ctx.extra["zoom_reset_href"] = state.href(from_=None, to=None)
    if flt.from_ms is not None:
        end = flt.to_ms if flt.to_ms is not None else ctx.now
        half = max((end - flt.from_ms) // 2, 1000)
        ctx.extra["zoom_out_href"] = state.href(
            from_=format_ms(max(flt.from_ms - half, 0)),
            to=format_ms(end + half) if end + half < ctx.now else None)


def fill_drawer(store: Store, ctx: PageContext) -> None:
    """The open run's drawer, or a not-found note in its place."""
    state = ctx.state
    assert state.run is not None
    try:
        detail = store.run_detail(state.run, tab=state.tab, ev_after=state.ev_after,
                                  ev_levels=state.ev_levels, ev_limit=EVENTS_PAGE,
                                  scope_id=_scope(state))
    except NotFound:
        ctx.extra["drawer_missing"] = state.run
        ctx.extra["drawer_close"] = state.href(run=None, tab=None, ev_level=None)
        return
    ctx.drawer = drawer.build(state, detail, EVENTS_PAGE)


def more_events(store: Store, ctx: PageContext) -> None:
    """A further console page for the open run."""
    state = ctx.state
    assert state.run is not None
    rows, next_after = store.events_page(state.run, after=state.ev_after,
                                         levels=state.ev_levels, limit=EVENTS_PAGE,
                                         scope_id=_scope(state))
    ctx.extra["events"] = drawer.events_view(state.run, rows)
    ctx.extra["more_events_href"] = drawer.more_href(replace(state, ev_after=0), next_after)
