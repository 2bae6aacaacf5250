"""The filter command: one line of text <-> the list's query parameters.

``status:failed,timed_out tool:github.* -status:running "rate limit" since:1h
sort:duration:desc`` parses to ``status=failed,timed_out&not_status=running&
tool=github.*&from=-1h&q=rate limit&sort=duration_ms:desc`` and renders back.
Both directions are pure functions (no database, no clock): relative times stay
relative in the URL, so a copied link keeps meaning "the last hour".

Divergences worth knowing:
- ``duration:>5s`` is strict (``min_duration_ms=5001``) while the URL bound is
  inclusive; the renderer picks whichever of ``>`` / ``>=`` reads better.
- Several bare words join into one ``q`` substring, separated by one space.
- Nothing is silently dropped: an unknown key or a bad value is an error with
  its position, and the caller shows it next to the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.store.cursor import SORTS
from app.store.inputs import STATUSES
from app.times import parse_time

KEYS = ("status", "trigger", "tool", "label", "duration", "since", "after", "before",
        "sort", "elicitation")
SET_KEYS = ("status", "trigger", "tool")
# Canonical order of the URL parameters the command can express.
PARAM_ORDER = ("status", "not_status", "trigger", "not_trigger", "tool", "not_tool", "label",
               "elicitation", "min_duration_ms", "max_duration_ms", "from", "to", "q", "sort")
SORT_WORDS = {"time": "created_at", "created": "created_at", "created_at": "created_at",
              "duration": "duration_ms", "duration_ms": "duration_ms"}
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"^(\d{1,12}(?:\.\d{1,3})?)(ms|s|m|h)?$")
_RELATIVE = re.compile(r"^-?(\d{1,9})(ms|s|m|h|d|w)$")
_KEY = re.compile(r"[A-Za-z_]+:")
MAX_MS = 2**53
# \Z, not $: "$" also matches before a final newline, and "0\n" would go out unquoted.
_PLAIN = re.compile(r'^[^\s",:-][^\s",:]*\Z')


@dataclass(frozen=True)
class CommandError:
    """A problem with one token: what is wrong, and where (character offsets)."""

    message: str
    start: int
    end: int


@dataclass(frozen=True)
class Command:
    """The parameters a command stands for (canonical order) and its errors."""

    params: tuple[tuple[str, str], ...]
    errors: tuple[CommandError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Token:
    negated: bool
    key: str | None      # None: a bare word or phrase (part of q)
    value: str
    start: int
    end: int
    quoted: bool = False


def _read_quoted(text: str, i: int) -> tuple[str, int, bool]:
    """Read a "..." string starting at text[i] == '"'; returns (value, end, closed)."""
    out: list[str] = []
    i += 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1, True
        out.append(ch)
        i += 1
    return "".join(out), i, False


def tokenize(text: str) -> tuple[list[Token], list[CommandError]]:
    """Split a command into tokens; an unclosed quote is an error."""
    tokens: list[Token] = []
    errors: list[CommandError] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        negated = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
        j = i + 1 if negated else i
        key: str | None = None
        match = _KEY.match(text, j)
        if match:
            key = match.group(0)[:-1].lower()
            j += len(match.group(0))
        quoted = j < n and text[j] == '"'
        if quoted:
            value, end, closed = _read_quoted(text, j)
            if not closed:
                errors.append(CommandError("unclosed quote", start, end))
        else:
            end = j
            while end < n and not text[end].isspace():
                end += 1
            value = text[j:end]
        tokens.append(Token(negated, key, value, start, end, quoted))
        i = end
    return tokens, errors


def _duration_ms(value: str) -> int | None:
    match = _DURATION.match(value.strip().lower())
    if not match:
        return None
    return round(float(match.group(1)) * _UNITS[match.group(2) or "ms"])


def _time_value(value: str) -> str | None:
    """A relative offset (``1h``, ``-1h``) as ``-1h``, or a validated absolute time as given."""
    rel = _RELATIVE.match(value.strip())
    if rel:
        return f"-{rel.group(1)}{rel.group(2)}"
    try:
        parse_time(value)
    except ValueError:
        return None
    return value.strip()


def _suggest_key(word: str) -> str:
    close = [k for k in KEYS if k.startswith(word[:2])]
    return f" (did you mean {close[0]}:?)" if close else ""


def parse_command(text: str) -> Command:
    """Parse command text into canonical URL parameters, collecting every error."""
    tokens, errors = tokenize(text)
    sets: dict[str, list[str]] = {}
    labels: list[str] = []
    single: dict[str, str] = {}
    words: list[str] = []

    def err(tok: Token, message: str) -> None:
        errors.append(CommandError(message, tok.start, tok.end))

    def put(tok: Token, name: str, value: str, what: str) -> None:
        if name in single and single[name] != value:
            err(tok, f"{what} is given twice")
        single[name] = value

    for tok in tokens:
        if tok.key is None or tok.key not in KEYS:
            if tok.key is not None:
                err(tok, f"unknown key {tok.key!r}{_suggest_key(tok.key)}; "
                         f"use {', '.join(KEYS)}, or quote the text")
            elif tok.negated:
                err(tok, "only status, trigger and tool can be negated")
            elif tok.value:
                words.append(tok.value)
            continue
        key, value = tok.key, tok.value
        if tok.negated and key not in SET_KEYS:
            err(tok, f"{key} cannot be negated; only status, trigger and tool can")
            continue
        if key in SET_KEYS:
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not parts:
                err(tok, f"{key}: give a value, e.g. {key}:{_example(key)}")
                continue
            if key == "status":
                bad = [p for p in parts if p not in STATUSES]
                if bad:
                    err(tok, f"unknown status {bad[0]!r}; use {', '.join(STATUSES)}")
                    continue
            name = ("not_" if tok.negated else "") + key
            sets.setdefault(name, []).extend(parts)
        elif key == "label":
            k, sep, _ = value.partition("=")
            if not sep or not k:
                err(tok, "label: use label:key=value")
                continue
            labels.append(value)
        elif key == "duration":
            bound = _duration(value)
            if isinstance(bound, str):
                err(tok, bound)
            else:
                put(tok, bound[0], bound[1], f"the {bound[0][:3]} duration bound")
        elif key == "since" and value.lower() == "all":
            put(tok, "from", "", "the start time (since:/after:)")
        elif key in ("since", "after", "before"):
            when = _time_value(value)
            if when is None or (key == "since" and not when.startswith("-")):
                err(tok, f"{key}: use a relative time (15m, 1h, 7d)"
                    + ("" if key == "since" else " or an absolute one (2026-11-21T10:00:00Z)"))
                continue
            put(tok, "to" if key == "before" else "from", when,
                "the end time (before:)" if key == "before" else "the start time (since:/after:)")
        elif key == "sort":
            sort = _sort(value)
            if sort is None:
                err(tok, "sort: use time:desc, time:asc, duration:desc or duration:asc")
                continue
            put(tok, "sort", sort, "sort")
        elif key == "elicitation":
            flag = {"true": "true", "yes": "true", "false": "false", "no": "false"}.get(
                value.lower())
            if flag is None:
                err(tok, "elicitation: use true or false")
                continue
            put(tok, "elicitation", flag, "elicitation")

    params: dict[str, list[str]] = {}
    for name, values in sets.items():
        params[name] = [",".join(dict.fromkeys(values))]
    if labels:
        params["label"] = list(dict.fromkeys(labels))
    for name, value in single.items():
        params[name] = [value]
    if words:
        params["q"] = [" ".join(words)]
    if params.get("sort") == ["created_at:desc"]:
        del params["sort"]
    ordered = tuple((name, v) for name in PARAM_ORDER for v in params.get(name, []))
    return Command(ordered, tuple(sorted(errors, key=lambda e: e.start)))


def _example(key: str) -> str:
    return {"status": "failed", "trigger": "cli", "tool": "github.*"}[key]


def _sort(value: str) -> str | None:
    field, _, direction = value.lower().partition(":")
    column = SORT_WORDS.get(field)
    sort = f"{column}:{direction or 'desc'}"
    return sort if column and sort in SORTS else None


def _duration(value: str) -> tuple[str, str] | str:
    """``>5s`` -> (min_duration_ms, 5001); an error message when it does not parse."""
    match = re.match(r"^(>=|<=|>|<)(.*)$", value)
    ms = _duration_ms(match.group(2)) if match else None
    if match is None or ms is None or ms >= MAX_MS:
        return "duration: use duration:>5s, duration:>=1m or duration:<200ms"
    op = match.group(1)
    if op.startswith(">"):
        return "min_duration_ms", str(ms + (op == ">"))
    if ms - (op == "<") < 0:
        return "duration: a duration below 0 matches nothing"
    return "max_duration_ms", str(ms - (op == "<"))


# -- rendering ----------------------------------------------------------------

def _quote(value: str) -> str:
    if _PLAIN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_value(value: str) -> str:
    # After "key:" a value may hold colons and commas (they are read verbatim).
    if value and not any(ch.isspace() or ch in '"\\' for ch in value) and value[0] != '"':
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fmt_ms(ms: int) -> str:
    for unit in ("h", "m", "s"):
        if ms and ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


def _nicer(a: str, b: str) -> str:
    return a if not a.endswith("ms") or b.endswith("ms") else b


def render_command(items: Iterable[tuple[str, str]]) -> str:
    """The command text for URL parameters (non-filter names are ignored)."""
    grouped: dict[str, list[str]] = {}
    for name, value in items:
        grouped.setdefault(name, []).append(value)

    def joined(name: str) -> str:
        parts = [p.strip() for v in grouped.get(name, []) for p in v.split(",") if p.strip()]
        return ",".join(dict.fromkeys(parts))

    out: list[str] = []
    for name in ("status", "trigger", "tool"):
        for prefix in ("", "not_"):
            value = joined(prefix + name)
            if value:
                out.append(f"{'-' if prefix else ''}{name}:{_quote_value(value)}")
    out.extend(f"label:{_quote_value(v)}" for v in dict.fromkeys(grouped.get("label", [])))
    if grouped.get("elicitation"):
        out.append(f"elicitation:{grouped['elicitation'][0].lower()}")
    if grouped.get("min_duration_ms") and grouped["min_duration_ms"][0].strip():
        ms = int(grouped["min_duration_ms"][0])
        inclusive = f"duration:>={_fmt_ms(ms)}"
        out.append(inclusive if ms == 0 else _nicer(f"duration:>{_fmt_ms(ms - 1)}", inclusive))
    if grouped.get("max_duration_ms") and grouped["max_duration_ms"][0].strip():
        ms = int(grouped["max_duration_ms"][0])
        out.append(_nicer(f"duration:<{_fmt_ms(ms + 1)}", f"duration:<={_fmt_ms(ms)}"))
    for name, key in (("from", "after"), ("to", "before")):
        value = (grouped.get(name) or [None])[0]
        if value is None:
            continue
        value = value.strip()
        if not value and name == "from":
            out.append("since:all")
        elif value.startswith("-"):
            out.append(f"{'since' if name == 'from' else 'before'}:{value[1:]}")
        elif value:
            out.append(f"{key}:{_quote_value(value)}")
    q = (grouped.get("q") or [""])[0]
    if q.strip():
        words = q.split(" ")
        plain = all(_PLAIN.match(w) for w in words)
        out.append(" ".join(words) if plain and q == q.strip() and "  " not in q
                   else _quote(q))
    sort = (grouped.get("sort") or [""])[0]
    if sort and sort != "created_at:desc":
        field, _, direction = sort.partition(":")
        out.append(f"sort:{'duration' if field == 'duration_ms' else 'time'}:{direction}")
    return " ".join(out)


def current_token(text: str) -> tuple[str | None, str, bool]:
    """What is being typed at the end of ``text``: (key or None, partial value, negated)."""
    if not text or text[-1].isspace():
        return None, "", False
    tokens, _ = tokenize(text)
    if not tokens:
        return None, "", False
    last = tokens[-1]
    return last.key, last.value, last.negated
