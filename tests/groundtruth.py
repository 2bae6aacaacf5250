"""A generated data set with known answers, for the list, meta and cursor tests.

:func:`generate` builds a few thousand executions deterministically (ties in
``created_at`` and in ``duration_ms``, rows without a duration or a trigger,
several tool namespaces with awkward characters, labels, interactions, a second
scope). Each run is kept twice: as the ingest payload the store receives, and as
a :class:`Run` holding what the contract says the store must derive from it.

:class:`Query` is a list query as the tests state it; ``params()`` turns it into
query-string pairs for ``parse_list_params`` and the functions below answer it
in plain Python straight from ``docs/DESIGN.md``. None of this imports the
store's filter, cursor or meta code: a bug there must not be copied here.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

# The contract's vocabularies, restated rather than imported.
STATUSES = ("pending", "queued", "running", "waiting_for_interaction",
            "completed", "failed", "cancelled", "timed_out")
TERMINAL = ("completed", "failed", "cancelled", "timed_out")
SORTS = ("created_at:desc", "created_at:asc", "duration_ms:desc", "duration_ms:asc")
STEPS_MS = (1_000, 5_000, 15_000, 30_000, 60_000, 300_000, 900_000, 1_800_000,
            3_600_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000, 604_800_000)
TOOL_FACET_SIZE = 20

# 2024-05-01T12:00:12.345Z: deliberately not aligned to any bucket width, and in
# the past, so "now" is always later than every row.
BASE_MS = 1_714_564_812_345
SPAN_MS = 8 * 3_600_000
BIG_TIE_MS = BASE_MS + SPAN_MS // 2
BIG_TIE_SIZE = 80
DURATION_TIES = (0, 1, 100, 250, 1_000, 60_000)

TRIGGERS = ("cli", "api", "schedule", "webhook", "otel")
# Case, '_' / '%' (LIKE wildcards on PostgreSQL) and '[' (a GLOB class on SQLite)
# all have to stay literal in the tool filter.
TOOLS = (
    "github.issues.list", "github.issues.create", "github.Issues.list", "github.pulls.get",
    "slack.chat.post", "slack.users.list", "fs.read", "fs.write", "fs.read_all",
    "fs.readXall", "fs.glob[1]", "http.get", "http.post", "http.get%json",
)
RARE_TOOLS = tuple(f"svc{k}.op" for k in range(12))   # pushes the tool facet past 20
NAMES = (
    "nightly sync", "Deploy 100% rollout", "load 1000 rows", "rate_limit probe",
    "ratexlimit probe", "Rate Limit drill", "Backfill users", "report_50%", "LINT all",
    "a%b literal", "axb literal", None,
)
CODES = ("python job.py --all", "SELECT 1", "make deploy ENV=prod", "echo 100%", None)
ERRORS = ("Rate limit exceeded", "timeout after 30s", "KeyError: 'user_id'",
          "disk 100% full", "HTTP 500 from upstream")
LABEL_CHOICES = (
    None,
    {"env": "prod"},
    {"env": "staging"},
    {"env": "prod", "team": "core"},
    {"env": "dev", "team": "web"},
    {"team": "core"},
    {"k.dot": "v=1", "env": "prod"},
    {'say"hi': "yes"},
    {"back\\slash": "ok", "env": "dev"},
    {"région": "eu", "team": "web"},
)
ID_PREFIXES = ("run-", "Run_", "r.", "z:", "A")


@dataclass(frozen=True)
class Run:
    """What the contract says the store holds for one generated execution."""

    id: str
    scope_id: str
    status: str
    trigger_kind: str | None
    name: str | None
    code: str | None
    error: str | None
    labels: dict[str, str] | None
    created_at: int
    started_at: int | None
    completed_at: int | None
    duration_ms: int | None
    had_elicitation: bool
    tool_paths: tuple[str, ...]
    error_count: int
    warn_count: int


@dataclass
class Dataset:
    runs: list[Run]
    # (scope_id, ingest payload) pairs, each payload at most 1,000 executions.
    batches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    # pytest and Hypothesis print fixtures on failure; thousands of runs would be noise
    # (and Hypothesis warns, which fails the run, on a repr of megabytes).
    def __repr__(self) -> str:
        return f"<Dataset of {len(self.runs)} runs>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def by_id(self) -> dict[str, Run]:
        return {r.id: r for r in self.runs}


def _created_times(rng: random.Random, n: int) -> list[int]:
    times: list[int] = [BIG_TIE_MS] * BIG_TIE_SIZE
    # Rows exactly on bucket edges of several widths.
    edge = (BASE_MS // 3_600_000 + 2) * 3_600_000
    times += [edge] * 5 + [edge + 300_000] * 3 + [edge - 1] * 2
    while len(times) < n:
        t = BASE_MS + rng.randrange(SPAN_MS)
        r = rng.random()
        k = 1 if r < 0.55 else rng.randint(2, 6) if r < 0.95 else rng.randint(10, 40)
        times += [t] * k
    times = times[:n]
    rng.shuffle(times)
    return times


def _duration(rng: random.Random) -> int:
    if rng.random() < 0.3:
        return rng.choice(DURATION_TIES)
    return int(rng.lognormvariate(7, 1.5))


@functools.cache
def generate(n: int = 3000, seed: int = 20240501, other_scope: int = 150) -> Dataset:
    """``n`` executions in scope ``main`` plus ``other_scope`` in scope ``other``."""
    rng = random.Random(seed)
    total = n + other_scope
    times = _created_times(rng, total)
    numbers = rng.sample(range(100_000), total)
    runs: list[Run] = []
    payloads: list[tuple[str, dict[str, Any]]] = []
    for i in range(total):
        scope = "main" if i < n else "other"
        run_id = f"{rng.choice(ID_PREFIXES)}{numbers[i]:05d}"
        created = times[i]
        status = rng.choices(STATUSES, weights=(5, 5, 10, 5, 40, 15, 10, 10))[0]
        started = completed = None
        if status not in ("pending", "queued"):
            started = created + rng.randrange(2_000)
        if status in TERMINAL:
            completed = started + _duration(rng)  # type: ignore[operator]
        trigger = None if rng.random() < 0.15 else rng.choice(TRIGGERS)
        name = rng.choice(NAMES)
        code = rng.choice(CODES)
        error = rng.choice(ERRORS) if status in ("failed", "timed_out") else None
        labels = rng.choice(LABEL_CHOICES)
        n_tools = rng.choices((0, 1, 2, 3, 4), weights=(25, 30, 25, 12, 8))[0]
        paths = [rng.choice(RARE_TOOLS) if rng.random() < 0.05 else rng.choice(TOOLS)
                 for _ in range(n_tools)]
        tool_calls = [{"tool_path": p, "started_at": created + k, "completed_at": created + k + 5}
                      for k, p in enumerate(paths)]
        interactions = [
            {"kind": rng.choice(("elicitation", "approval")),
             "status": rng.choice(("pending", "resolved")), "message": "ok?",
             "created_at": created + 1}
            for _ in range(rng.choices((0, 1, 2), weights=(78, 17, 5))[0])
        ]
        levels = [rng.choice(("debug", "info", "warn", "error")) for _ in range(rng.randint(0, 3))]
        events = [{"level": lv, "type": "log", "message": f"line {k}", "ts": created + k}
                  for k, lv in enumerate(levels)]
        payload = {
            "id": run_id, "status": status, "trigger_kind": trigger, "name": name, "code": code,
            "error": error, "labels": labels, "created_at": created, "started_at": started,
            "completed_at": completed, "tool_calls": tool_calls, "interactions": interactions,
            "events": events,
        }
        runs.append(Run(
            id=run_id, scope_id=scope, status=status, trigger_kind=trigger, name=name,
            code=code, error=error, labels=labels, created_at=created, started_at=started,
            completed_at=completed,
            duration_ms=None if completed is None or started is None else completed - started,
            had_elicitation=bool(interactions), tool_paths=tuple(paths),
            error_count=levels.count("error"), warn_count=levels.count("warn"),
        ))
        payloads.append((scope, payload))
    batches: list[tuple[str, dict[str, Any]]] = []
    for scope in ("main", "other"):
        mine = [p for s, p in payloads if s == scope]
        for start in range(0, len(mine), 1000):
            batches.append((scope, {"executions": mine[start:start + 1000]}))
    return Dataset(runs=runs, batches=batches)


# -- the reference -------------------------------------------------------------

@functools.cache
def glob_regex(pattern: str) -> re.Pattern[str]:
    """The contract's tool glob: ``*`` any run (dots too), ``?`` one character."""
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _calls_any(run: Run, patterns: tuple[str, ...]) -> bool:
    regexes = [glob_regex(p) for p in patterns]
    return any(rx.fullmatch(path) for rx in regexes for path in run.tool_paths)


@dataclass(frozen=True)
class Query:
    """A list query in the contract's terms (``None`` / empty: no constraint)."""

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
    sort: str = "created_at:desc"
    scope_id: str | None = None

    def params(self) -> list[tuple[str, str]]:
        """Query-string pairs; sets alternate between repeated and comma-joined forms."""
        out: list[tuple[str, str]] = []
        for i, name in enumerate(("status", "not_status", "trigger", "not_trigger",
                                  "tool", "not_tool")):
            values: tuple[str, ...] = getattr(self, name)
            if not values:
                continue
            if i % 2 or any("," in v for v in values):
                out += [(name, v) for v in values]
            else:
                out.append((name, ",".join(values)))
        out += [("label", f"{k}={v}") for k, v in self.label]
        if self.from_ms is not None:
            out.append(("from", str(self.from_ms)))
        if self.to_ms is not None:
            out.append(("to", str(self.to_ms)))
        if self.q is not None:
            out.append(("q", self.q))
        if self.elicitation is not None:
            out.append(("elicitation", "true" if self.elicitation else "false"))
        if self.min_duration_ms is not None:
            out.append(("min_duration_ms", str(self.min_duration_ms)))
        if self.max_duration_ms is not None:
            out.append(("max_duration_ms", str(self.max_duration_ms)))
        if self.sort != "created_at:desc":
            out.append(("sort", self.sort))
        return out

    def matches(self, run: Run) -> bool:
        trigger = run.trigger_kind if run.trigger_kind is not None else "unknown"
        labels = run.labels or {}
        return (
            (self.scope_id is None or run.scope_id == self.scope_id)
            and (not self.status or run.status in self.status)
            and run.status not in self.not_status
            and (not self.trigger or trigger in self.trigger)
            and trigger not in self.not_trigger
            and (not self.tool or _calls_any(run, self.tool))
            and not (self.not_tool and _calls_any(run, self.not_tool))
            and all(k in labels and labels[k] == v for k, v in self.label)
            and (self.from_ms is None or run.created_at >= self.from_ms)
            and (self.to_ms is None or run.created_at < self.to_ms)
            and (self.q is None or any(self.q.lower() in (v or "").lower()
                                       for v in (run.code, run.name, run.error)))
            and (self.elicitation is None or run.had_elicitation == self.elicitation)
            and (self.min_duration_ms is None
                 or (run.duration_ms is not None and run.duration_ms >= self.min_duration_ms))
            and (self.max_duration_ms is None
                 or (run.duration_ms is not None and run.duration_ms <= self.max_duration_ms))
        )

    def without(self, facet: str) -> Query:
        """The query a facet's counts use: everything but that facet's own filters."""
        if facet == "elicitation":
            return replace(self, elicitation=None)
        return replace(self, **{facet: (), f"not_{facet}": ()})


def in_order(runs: list[Run], query: Query) -> list[Run]:
    """The matching runs in the query's sort order (ties on id, no duration last)."""
    matching = [r for r in runs if query.matches(r)]
    key, direction = query.sort.split(":")
    desc = direction == "desc"
    if key == "created_at":
        return sorted(matching, key=lambda r: (r.created_at, r.id), reverse=desc)
    timed = sorted((r for r in matching if r.duration_ms is not None),
                   key=lambda r: (r.duration_ms, r.id), reverse=desc)
    untimed = sorted((r for r in matching if r.duration_ms is None),
                     key=lambda r: r.id, reverse=desc)
    return timed + untimed


def _ranked(counts: dict[str, int]) -> list[dict[str, Any]]:
    return [{"value": v, "count": n}
            for v, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def facets(runs: list[Run], query: Query) -> dict[str, list[dict[str, Any]]]:
    """Disjunctive facets: each counted under every filter but its own."""
    of = {name: query.without(name) for name in ("status", "trigger", "tool", "elicitation")}
    by_status = Counter(r.status for r in runs if of["status"].matches(r))
    by_trigger = Counter(r.trigger_kind or "unknown" for r in runs if of["trigger"].matches(r))
    by_tool: Counter[str] = Counter()
    for r in runs:
        if of["tool"].matches(r):
            by_tool.update(set(r.tool_paths))
    by_elicitation = Counter("true" if r.had_elicitation else "false" for r in runs
                             if of["elicitation"].matches(r))
    return {
        "status": _ranked({s: by_status[s] for s in STATUSES}),
        "trigger": _ranked(dict(by_trigger)),
        "tool": _ranked(dict(by_tool))[:TOOL_FACET_SIZE],
        "elicitation": _ranked({"true": by_elicitation["true"],
                                "false": by_elicitation["false"]}),
    }


def iso(ms: int | None) -> str | None:
    """Epoch ms as the contract's RFC 3339 UTC string with milliseconds."""
    if ms is None:
        return None
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bucket_width(span_ms: int) -> int:
    """The smallest step giving at most 120 buckets over ``span_ms``."""
    for step in STEPS_MS:
        if -(-span_ms // step) <= 120:
            return step
    return STEPS_MS[-1]


def timeline(runs: list[Run], query: Query, now: int) -> dict[str, Any]:
    """The timeline object for ``query``, taking ``now`` as the current time."""
    matching = [r for r in runs if query.matches(r)]
    lo = min((r.created_at for r in matching), default=None)
    hi = max((r.created_at for r in matching), default=None)
    start, end = query.from_ms, query.to_ms
    if start is None:
        start = lo
    if end is None:
        if query.from_ms is None:
            end = None if hi is None else hi + 1      # the span of the rows
        else:
            end = now if hi is None else max(now, hi + 1)
    if start is None or end is None:
        return {"bucket_ms": None, "from": iso(start), "to": iso(end), "buckets": []}
    width = bucket_width(max(0, end - start))
    buckets: list[dict[str, Any]] = []
    if end > start:
        counts: dict[int, Counter[str]] = {}
        for r in matching:
            counts.setdefault(r.created_at - r.created_at % width, Counter())[r.status] += 1
        b = start - start % width
        while b < end:
            buckets.append({"start": iso(b), "counts": dict(counts.get(b, {}))})
            b += width
    return {"bucket_ms": width, "from": iso(start), "to": iso(end), "buckets": buckets}


def percentiles(runs: list[Run], query: Query) -> dict[str, int | None]:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    values = sorted(r.duration_ms for r in runs
                    if query.matches(r) and r.duration_ms is not None)
    out: dict[str, int | None] = {}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99)):
        if not values:
            out[name] = None
            continue
        rank = math.ceil(Fraction(p, 100) * len(values))
        out[name] = values[max(rank, 1) - 1]
    return out
