"""The facet rail's view model: each value with its count and its toggle links."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from app.web import urls
from app.web.context import PageState

TITLES = {"status": "Status", "trigger": "Trigger", "tool": "Tool",
          "elicitation": "Asked a person"}
PRESETS = (("15m", "-15m"), ("1h", "-1h"), ("24h", "-24h"), ("7d", "-7d"), ("30d", "-30d"),
           ("all", ""))
SEARCH_THRESHOLD = 20


@dataclass(frozen=True)
class FacetValue:
    value: str
    label: str
    count: int | None
    selected: bool
    excluded: bool
    toggle_href: str
    only_href: str
    exclude_href: str


@dataclass
class Facet:
    name: str
    title: str
    values: list[FacetValue]
    any_selected: bool
    clear_href: str
    searchable: bool = False


@dataclass
class Rail:
    facets: list[Facet]
    presets: list[tuple[str, str, bool]]          # label, href, selected
    custom_range: tuple[str, str] | None          # from, to as given, when not a preset
    reset_href: str | None
    tool_q: str
    hidden: list[tuple[str, str]] = field(default_factory=list)  # for the tool search form


def _label(facet: str, value: str) -> str:
    if facet == "elicitation":
        return "yes" if value == "true" else "no"
    return value.replace("_", " ") if facet == "status" else value


@lru_cache(maxsize=2048)
def _links(items: urls.Items, name: str, value: str) -> tuple[str, str, str]:
    """A value's toggle, only and exclude URLs. Pure, and the same views are
    drawn over and over (each refresh, every htmx swap of the rail), so they
    are kept: ~60 links of a rail cost ~1 ms to build."""
    return (urls.href(urls.toggle(items, name, value)), urls.href(urls.only(items, name, value)),
            urls.href(urls.exclude(items, name, value)))


def facet(state: PageState, name: str, counted: list[dict[str, Any]],
          searchable: bool = False) -> Facet:
    """One facet: counted values first, then selected values the counts did not list."""
    items = state.items
    chosen = urls.values(items, name)
    excluded = urls.values(items, "not_" + name)
    seen = {c["value"] for c in counted}
    rows = list(counted) + [{"value": v, "count": None} for v in chosen + excluded
                            if v not in seen]
    values = []
    for row in rows:
        value = row["value"]
        toggle, only, exclude = _links(items, name, value)
        values.append(FacetValue(
            value=value, label=_label(name, value), count=row["count"],
            selected=value in chosen, excluded=value in excluded,
            toggle_href=toggle, only_href=only, exclude_href=exclude))
    return Facet(name, TITLES[name], values, bool(chosen or excluded),
                 urls.href(urls.without(items, name, "not_" + name)), searchable)


def build(state: PageState, facets: dict[str, Any], *, tool_overflow: bool,
          tool_matches: list[dict[str, Any]] | None = None) -> Rail:
    """The rail for the current URL; ``tool_matches`` replaces the top tools while searching."""
    tools = tool_matches if tool_matches is not None else facets.get("tool", [])
    built = [
        facet(state, "status", facets.get("status", [])),
        facet(state, "trigger", facets.get("trigger", [])),
        facet(state, "tool", tools, searchable=tool_overflow or bool(state.tool_q)),
        facet(state, "elicitation", facets.get("elicitation", [])),
    ]
    items = state.items
    current_from = next((v for n, v in items if n == "from"), None)
    current_to = next((v for n, v in items if n == "to"), None)
    presets = []
    for label, offset in PRESETS:
        selected = current_to is None and (
            current_from == offset or (current_from is None and offset == "-24h"))
        presets.append((label, urls.href(urls.replace(items, from_=offset, to=None)), selected))
    known = {offset for _, offset in PRESETS}
    custom = None
    if current_to is not None or (current_from is not None and current_from not in known):
        custom = (current_from or "", current_to or "")
    reset = urls.href(urls.reset(items)) if state.filter_items else None
    hidden = [(n, v) for n, v in items if n != "tool_q"]
    return Rail(built, presets, custom, reset, state.tool_q, hidden)
