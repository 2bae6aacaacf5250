"""Suggestions for the filter command: keys, then values for the key being typed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.store.inputs import STATUSES
from app.web.filter_command import KEYS, current_token

MAX_SUGGESTIONS = 8
HINTS = {
    "status": "run status", "trigger": "how it started", "tool": "called a tool (globs: *)",
    "label": "key=value", "duration": ">5s, <200ms", "since": "15m, 1h, 7d, all",
    "after": "time or offset", "before": "time or offset", "sort": "time / duration",
    "elicitation": "asked a person",
}
FIXED = {
    "status": list(STATUSES),
    "since": ["15m", "1h", "24h", "7d", "30d", "all"],
    "before": ["15m", "1h", "24h"],
    "after": ["1h", "24h"],
    "sort": ["duration:desc", "duration:asc", "time:asc", "time:desc"],
    "duration": [">1s", ">5s", ">1m", "<200ms"],
    "elicitation": ["true", "false"],
}


@dataclass(frozen=True)
class Suggestion:
    token: str      # what replaces the token being typed
    label: str
    hint: str


def suggest(text: str, known: Callable[[str], list[str]]) -> list[Suggestion]:
    """Suggestions for the end of ``text``; ``known(kind)`` lists tool paths or triggers."""
    key, partial, negated = current_token(text)
    sign = "-" if negated else ""
    if key is None:
        word = partial.lower()
        return [Suggestion(f"{sign}{k}:", f"{sign}{k}:", HINTS[k]) for k in KEYS
                if k.startswith(word) and (not negated or k in ("status", "trigger", "tool"))
                ][:MAX_SUGGESTIONS]
    if key not in KEYS:
        return []
    # Comma lists: suggest for the part after the last comma, keep the rest.
    head, _, tail = partial.rpartition(",")
    prefix = f"{head}," if head else ""
    options = FIXED.get(key) or (known(key) if key in ("tool", "trigger") else [])
    taken = set(head.split(",")) if head else set()
    # An option already typed in full is not worth suggesting again.
    picked = [o for o in options
              if o.lower().startswith(tail.lower()) and o not in taken and o != tail]
    if key == "tool" and tail:
        picked += [o for o in options if tail.lower() in o.lower() and o not in picked]
    return [Suggestion(f"{sign}{key}:{prefix}{o}", o, HINTS[key])
            for o in picked[:MAX_SUGGESTIONS]]
