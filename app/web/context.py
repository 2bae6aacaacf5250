"""The page's state read from its URL, and the typed context every template receives.

One parse serves everything: the list API's own ``parse_list_params`` builds
the filter, so the page, the JSON list, the facets and the timeline can never
disagree about what a URL means. Page-only names (``run``, ``tab``, ``live``,
the console's ``ev_level``/``ev_after``, the rail's ``tool_q``, the command's
``cmd``) are validated here with the same strictness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from app.auth.principal import Principal, principal_of
from app.store.errors import BadParameter
from app.store.inputs import LEVELS
from app.store.params import ListQuery, parse_list_params
from app.web import urls
from app.web.filter_command import CommandError

PAGE_EXTRA = frozenset({"run", "tab", "live", "ev_after", "ev_level", "tool_q", "slow", "cmd"})
TABS = ("overview", "tools", "interactions", "events")
DEFAULT_FROM = "-24h"
PAGE_SIZE = 50


@dataclass(frozen=True)
class PageState:
    """What the URL says: the canonical parameters and the parsed list query."""

    items: urls.Items              # canonical: filters, then run/tab/ev_level/live
    query: ListQuery
    run: str | None = None
    tab: str = "overview"
    live: bool = False
    ev_levels: tuple[str, ...] = ()
    ev_after: int = 0
    tool_q: str = ""
    slow_ms: int | None = None

    @property
    def default_range(self) -> bool:
        """True when the URL names no time range and the page's 24 h applies."""
        return not any(n in ("from", "to") for n, _ in self.items)

    def href(self, **changes: str | None) -> str:
        """This page's URL with some parameters changed (None removes one)."""
        return urls.href(urls.replace(self.items, **changes))

    @property
    def filter_items(self) -> urls.Items:
        """Only the filter parameters (what the command text stands for)."""
        return tuple((n, v) for n, v in self.items if n not in urls.PAGE_NAMES)


def _single(items: list[tuple[str, str]], name: str) -> str | None:
    found = [v for n, v in items if n == name]
    if len(found) > 1:
        raise BadParameter(f"{name}: give it once", {"parameter": name})
    return found[0] if found else None


def parse_state(raw: Iterable[tuple[str, str]], *, now: int | None = None) -> PageState:
    """Parse the page's query string; raises ``BadParameter`` naming the culprit."""
    items = list(raw)
    state = urls.canonical(items)
    effective = [*items]
    if not any(n in ("from", "to") for n, _ in items):
        effective.append(("from", DEFAULT_FROM))
    query = parse_list_params(effective, allowed_extra=PAGE_EXTRA, now=now)
    query = ListQuery(filter=query.filter, sort=query.sort, cursor=query.cursor,
                      limit=query.limit if _single(items, "limit") else PAGE_SIZE,
                      meta=query.meta)
    tab = _single(items, "tab") or "overview"
    if tab not in TABS:
        raise BadParameter(f"tab: use one of {', '.join(TABS)}", {"parameter": "tab"})
    levels = tuple(dict.fromkeys(
        p.strip() for n, v in items if n == "ev_level" for p in v.split(",") if p.strip()))
    if any(level not in LEVELS for level in levels):
        raise BadParameter(f"ev_level: use {', '.join(LEVELS)}", {"parameter": "ev_level"})
    numbers: dict[str, int | None] = {}
    for name in ("ev_after", "slow"):
        value = _single(items, name)
        if value is None or not value.strip():
            numbers[name] = None
        elif value.strip().isdigit() and int(value) < 2**53:
            numbers[name] = int(value)
        else:
            raise BadParameter(f"{name}: use a whole number", {"parameter": name})
    run = _single(items, "run")
    if run is not None and (not run.strip() or len(run) > 128):
        raise BadParameter("run: an execution id", {"parameter": "run"})
    live = _single(items, "live")
    return PageState(
        items=state, query=query, run=run or None, tab=tab,
        live=live not in (None, "", "0", "false"), ev_levels=levels,
        ev_after=numbers["ev_after"] or 0, tool_q=(_single(items, "tool_q") or "").strip()[:200],
        slow_ms=numbers["slow"],
    )


@dataclass
class PageContext:
    """Everything a template of the runs page may use; each partial uses a part.

    ``rows``/``next_href``: the list page; ``meta``: total, facets, timeline
    and percentiles (absent for fragments that do not need them); ``rail``,
    ``chart``, ``drawer``: view models built from them; ``command_*``: the
    filter command's text and any errors to show under it.
    """

    state: PageState
    now: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    next_href: str | None = None
    total: int | None = None
    shown: int = 0
    meta: dict[str, Any] | None = None
    rail: Any = None
    chart: Any = None
    drawer: Any = None
    command_text: str = ""
    command_errors: tuple[CommandError, ...] = ()
    error: str | None = None
    status: int = 200
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def run_href_base(self) -> str:
        """The page URL with ``run=`` last and empty: a row appends its (encoded) id."""
        base = urls.href(urls.without(self.state.items, "run", "ev_level"))
        return base + ("&" if "?" in base else "?") + "run="

    @property
    def has_filters(self) -> bool:
        """True when any filter (not the drawer or live mode) is set."""
        return bool(self.state.filter_items)


@dataclass(frozen=True)
class AuthView:
    """Who the page is shown to, for every template (the global ``auth_of``).

    ``csrf``: the session's CSRF secret, which every form carries as a hidden
    ``csrf_token`` field and every htmx request as ``X-CSRF-Token`` (None when
    not signed in with a session: Bearer and local requests need none);
    ``signed_in``: show the token's name and a sign-out button; ``can_exec``:
    the principal may run commands (the server must allow it too).
    """

    principal: Principal
    csrf: str | None
    signed_in: bool
    can_exec: bool


def auth_of(request: Any) -> AuthView:
    """The :class:`AuthView` of a request."""
    # A stand-in request without a scope (a template rendered alone) is local.
    principal = principal_of(getattr(request, "scope", {}))
    session = principal.via == "session"
    return AuthView(principal=principal, csrf=principal.csrf if session else None,
                    signed_in=session, can_exec=principal.can("exec"))
