"""Page URLs computed on the server, as Datasette does for its facets.

The template never assembles a query string: every link (a facet toggle, an
"only", a preset, a sort header, the drawer) is built here from the current
parameters, so the URL stays the single source of the page's state and every
link is an ordinary link that also works without JavaScript.

Parameters are kept as an ordered tuple of ``(name, value)`` pairs in a
canonical form: each set parameter appears once, comma-joined, so a link never
accumulates ``status=a&status=b`` duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from app.web.filter_command import PARAM_ORDER

Items = tuple[tuple[str, str], ...]
SET_NAMES = ("status", "not_status", "trigger", "not_trigger", "tool", "not_tool")
# Page-only parameters kept after the filter ones, in this order.
PAGE_NAMES = ("run", "tab", "ev_level", "live")
ORDER = (*PARAM_ORDER, *PAGE_NAMES)
# Parameters that describe one position or one page, dropped by any filter change.
TRANSIENT = frozenset({"cursor", "ev_after", "tool_q", "slow", "cmd", "limit"})
PATH = "/"


def _parts(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def canonical(items: Iterable[tuple[str, str]]) -> Items:
    """Merge repeated set parameters, drop empty and transient ones, fix the order.

    An empty ``from`` is kept: it is how "all time" is told apart from the
    page's default range.
    """
    sets: dict[str, list[str]] = {}
    multi: dict[str, list[str]] = {}
    for name, value in items:
        if name in TRANSIENT:
            continue
        if name in SET_NAMES:
            sets.setdefault(name, []).extend(_parts(value))
        elif name == "label":
            multi.setdefault(name, []).append(value)
        elif value.strip() or name == "from":
            multi[name] = [value]
    out: list[tuple[str, str]] = []
    for name in ORDER:
        if sets.get(name):
            out.append((name, ",".join(dict.fromkeys(sets[name]))))
        out.extend((name, v) for v in dict.fromkeys(multi.get(name, [])))
    return tuple(out)


def href(items: Iterable[tuple[str, str]]) -> str:
    """The page URL for these parameters (readable: commas, colons and stars kept)."""
    pairs = list(items)
    if not pairs:
        return PATH
    return PATH + "?" + urlencode(pairs, safe=",:*")


def values(items: Items, name: str) -> list[str]:
    """Every value of ``name`` (set parameters split on commas)."""
    return [p for n, v in items if n == name for p in (_parts(v) if n in SET_NAMES else [v])]


def replace(items: Items, **changes: str | None) -> Items:
    """Set (or, with None, remove) single parameters; ``from_`` stands for ``from``."""
    names = {k.rstrip("_"): v for k, v in changes.items()}
    kept = [(n, v) for n, v in items if n not in names]
    kept.extend((n, v) for n, v in names.items() if v is not None)
    return canonical(kept)


def without(items: Items, *names: str) -> Items:
    """These parameters removed."""
    return canonical((n, v) for n, v in items if n not in names)


def _with_set(items: Items, name: str, new: list[str]) -> Items:
    kept = [(n, v) for n, v in items if n != name]
    if new:
        kept.append((name, ",".join(new)))
    return canonical(kept)


def toggle(items: Items, facet: str, value: str) -> Items:
    """Add ``value`` to the facet's include set, or take it out when it is there.

    Picking a value also lifts an exclusion of it, so one click never leaves a
    value both included and excluded.
    """
    if facet == "elicitation":
        current = values(items, "elicitation")
        return replace(items, elicitation=None if current == [value] else value)
    current = values(items, facet)
    if value in current:
        return _with_set(items, facet, [v for v in current if v != value])
    excluded = [v for v in values(items, "not_" + facet) if v != value]
    return _with_set(_with_set(items, "not_" + facet, excluded), facet, [*current, value])


def only(items: Items, facet: str, value: str) -> Items:
    """The facet narrowed to exactly ``value`` (its exclusions cleared)."""
    if facet == "elicitation":
        return replace(items, elicitation=value)
    return _with_set(without(items, "not_" + facet), facet, [value])


def exclude(items: Items, facet: str, value: str) -> Items:
    """Exclude ``value`` (the command's ``-facet:value``), dropping it from the include set."""
    included = [v for v in values(items, facet) if v != value]
    current = values(items, "not_" + facet)
    if value in current:
        return _with_set(items, "not_" + facet, [v for v in current if v != value])
    return _with_set(_with_set(items, facet, included), "not_" + facet, [*current, value])


def reset(items: Items) -> Items:
    """Every filter removed; the open drawer and live mode stay."""
    return canonical((n, v) for n, v in items if n in ("run", "tab", "live"))
