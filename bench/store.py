"""Store benchmark (issue 2): bulk load and list / ``meta`` latency on SQLite.

What it measures
    1. Bulk load: ``--executions`` runs (default 1,000,000; about 5 tool calls,
       2.5 log events and 0.05 interactions each) written through the real bulk
       path, ``parse_ingest(payload)`` then ``Store.ingest(batch)``,
       1,000 executions per batch as ``POST /api/ingest`` allows. Rows/s counts
       every row written (executions + tool calls + interactions + events, the
       ``execution.created`` event the store adds included) over the wall time
       of validation + database. Building the payload dicts is the client's
       work: it is timed and printed but not counted.
    2. Queries through the real code, with a ``ListQuery`` from
       ``parse_list_params``: the first list page (``Store.list_executions``,
       ``meta=false``) unfiltered, filtered by ``status`` + ``tool`` glob and by
       ``q`` substring (one that matches and one that matches nothing: a full
       scan); and ``Store.list_meta`` for the last 24 h (also filtered) and
       all time. Each is run ``--warmup`` times, then ``--runs`` times; p50/p95
       are nearest-rank over those runs, in milliseconds of wall time, with the
       p50 of CPU time beside them (steadier on a shared machine).

The data: runs spread evenly over the 30 days before the load, imported in
time order (a history backfill) with time-sortable ids; ~30 tool paths in
github/slack/fs/http/db with a skewed popularity; statuses, triggers, errors
and events in realistic proportions. The random seed is fixed, so two loads
hold the same data up to the random bits of the ids. Relative times (``-24h``)
are read against the newest run, so ``--reuse`` on an older file times the same
rows.

Usage (from the repository root)::

    .venv/bin/python bench/store.py                                   # full load + queries
    .venv/bin/python bench/store.py --executions 50000 --database bench/out/small.db
    .venv/bin/python bench/store.py --reuse --runs 50                 # queries only
    .venv/bin/python bench/store.py --reuse --profile --only meta     # each statement's
                                                                      # time and query plan
    .venv/bin/python bench/store.py --reuse --pragma cache_size=-262144  # try a PRAGMA

``--pragma`` adds PRAGMAs to every new connection after the app's own (through
an extra ``connect`` listener here, not in the app), to measure proposals.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.db.engine import Database, open_database
from app.db.migrate import upgrade
from app.db.models import executions
from app.ids import new_id
from app.process import tune_gc
from app.store import Store
from app.store.inputs import parse_ingest
from app.store.params import parse_list_params
from bench._machine import describe
from bench._timing import timed

BATCH = 1000
DAY_MS = 86_400_000
SPAN_MS = 30 * DAY_MS

# ~30 tool paths; earlier ones are called more often (weights 1/rank^0.8).
TOOL_PATHS = [
    f"{ns}.{op}" for ns, ops in (
        ("github", ("issues.list", "issues.create", "issues.comment", "pulls.get",
                    "pulls.list", "pulls.merge", "repos.search", "actions.dispatch")),
        ("slack", ("chat.post", "chat.update", "users.lookup", "channels.history",
                   "reactions.add")),
        ("fs", ("read", "write", "glob", "stat", "delete", "mkdir")),
        ("http", ("get", "post", "put", "delete", "head")),
        ("db", ("query", "execute", "transaction", "migrate", "explain", "vacuum")),
    ) for op in ops
]
TOOL_WEIGHTS = [1 / (rank + 1) ** 0.8 for rank in range(len(TOOL_PATHS))]
random.Random(1).shuffle(TOOL_WEIGHTS)
TRIGGERS = ("cli", "http", "mcp", "schedule", None)
TRIGGER_WEIGHTS = (30, 25, 25, 15, 5)
STATUSES = ("completed", "failed", "cancelled", "timed_out", "running",
            "waiting_for_interaction", "queued", "pending")
STATUS_WEIGHTS = (72, 14, 4, 4, 2, 1, 2, 1)
NAMES = ("nightly-sync", "triage-issues", "summarize-channel", "deploy-preview",
         "backfill-users", "weekly-report", "index-docs", "answer-question", "rotate-keys",
         "import-csv", "label-prs", "cleanup-branches")
ERRORS = (
    "RateLimitError: GitHub API rate limit exceeded (retry after 42s)",
    "TimeoutError: http.get https://api.example.com/v2/items took longer than 30s",
    "PermissionError: fs.write /srv/reports/weekly.md: read-only file system",
    "KeyError: 'channel_id'",
    "ValueError: could not parse CSV row 1187: expected 7 fields, saw 9",
    "OperationalError: db.query: deadlock detected",
)
WARNINGS = ("retrying after 429", "response was truncated to 1 MB", "slow query: 2.4s",
            "cache miss for key users:all")
TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out"})


# -- data --------------------------------------------------------------------
def make_execution(rng: random.Random, index: int, created: int) -> dict[str, Any]:
    """One run as a client would send it to ``POST /api/ingest``."""
    status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
    name = rng.choice(NAMES)
    trigger = rng.choices(TRIGGERS, TRIGGER_WEIGHTS)[0]
    started = created + rng.randint(0, 2_000)
    duration = int(rng.lognormvariate(8.5, 1.2))  # median ~5 s, long tail
    terminal = status in TERMINAL
    failed = status == "failed"
    calls = []
    t = started
    paths = rng.choices(TOOL_PATHS, TOOL_WEIGHTS, k=rng.randint(0, 10))
    for seq, path in enumerate(paths):
        end = t + int(rng.lognormvariate(6, 1))
        call_failed = failed and seq == len(paths) - 1
        open_call = not terminal and seq == len(paths) - 1
        calls.append({
            "tool_path": path, "args": {"q": f"{name} #{index}", "page": seq + 1},
            "status": "running" if open_call else "failed" if call_failed else "completed",
            "result": None if call_failed or open_call else {"items": rng.randint(0, 50)},
            "error": rng.choice(ERRORS) if call_failed else None,
            "started_at": t, "completed_at": None if open_call else end,
        })
        t = end + rng.randint(5, 200)
    events = []
    for seq in range(rng.randint(1, 4)):
        roll = rng.random()
        level = "error" if roll < 0.05 else "warn" if roll < 0.15 else "info"
        events.append({
            "type": "stdout" if roll > 0.8 else "log", "level": level,
            "message": (rng.choice(ERRORS) if level == "error" else
                        rng.choice(WARNINGS) if level == "warn" else
                        f"step {seq + 1} of {name} done"),
            "ts": started + seq * 500,
        })
    interactions = []
    if status == "waiting_for_interaction" or rng.random() < 0.04:
        pending = status == "waiting_for_interaction"
        interactions.append({
            "kind": rng.choice(("approval", "elicitation")),
            "message": "Deploy the preview to staging?", "request": {"options": ["yes", "no"]},
            "status": "pending" if pending else "resolved",
            "action": None if pending else rng.choice(("accept", "decline")),
            "created_at": started + 100, "resolved_at": None if pending else started + 5_000,
        })
    code = (f"runyard run -- ./scripts/{name}.sh --batch {index % 97}" if trigger == "cli"
            else f"agent.run({name!r}, user='ops@example.com', batch={index % 97})")
    return {
        "id": new_id(created), "name": name, "status": status, "trigger_kind": trigger,
        "trigger_meta": {"host": f"worker-{index % 7}", "user": "ops"}, "code": code,
        "result": {"ok": True, "items": len(calls)} if status == "completed" else None,
        "error": (calls[-1]["error"] if calls else ERRORS[index % len(ERRORS)]) if failed
        else None,
        "exit_code": (0 if status == "completed" else 1) if terminal else None,
        "labels": {"env": rng.choice(("prod", "staging")), "team": rng.choice(("ops", "data"))},
        "created_at": created,
        "started_at": None if status in ("pending", "queued") else started,
        "completed_at": started + duration if terminal else None,
        "tool_calls": calls, "interactions": interactions, "events": events,
    }


def payloads(total: int, end_ms: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``POST /api/ingest`` bodies of up to 1,000 runs, oldest first, ending at ``end_ms``."""
    rng = random.Random(seed)
    start = end_ms - SPAN_MS
    for first in range(0, total, BATCH):
        runs = []
        for index in range(first, min(total, first + BATCH)):
            created = start + index * SPAN_MS // total + rng.randint(0, 1000)
            runs.append(make_execution(rng, index, created))
        yield {"executions": runs}


def load(store: Store, total: int) -> dict[str, float]:
    """Bulk-load ``total`` runs; prints progress, returns the timings.

    CPU times are kept too: on a shared machine they show what the load costs
    when it does not have to wait for a core.
    """
    t_gen = t_val = t_db = c_val = c_db = 0.0
    rows = 0
    last_rows, last_time = 0, 0.0
    started = time.perf_counter()
    stream = payloads(total, end_ms=time.time_ns() // 1_000_000)
    batches = -(-total // BATCH)
    for n in range(1, batches + 1):
        t0 = time.perf_counter()
        body = next(stream)
        t1, c1 = time.perf_counter(), time.process_time()
        batch = parse_ingest(body)
        t2, c2 = time.perf_counter(), time.process_time()
        counts = store.ingest(batch)
        t3, c3 = time.perf_counter(), time.process_time()
        t_gen, t_val, t_db = t_gen + t1 - t0, t_val + t2 - t1, t_db + t3 - t2
        c_val, c_db = c_val + c2 - c1, c_db + c3 - c2
        rows += sum(counts.values())
        if n % max(1, batches // 10) == 0 or n == batches:
            now = t_val + t_db
            print(f"  {n * BATCH:>9,} runs  {rows:>11,} rows  "
                  f"{rows / now:>9,.0f} rows/s so far  "
                  f"{(rows - last_rows) / (now - last_time):>9,.0f} rows/s last interval  "
                  f"({time.perf_counter() - started:,.0f} s elapsed)", flush=True)
            last_rows, last_time = rows, now
    return {"rows": rows, "generate": t_gen, "validate": t_val, "database": t_db,
            "validate_cpu": c_val, "database_cpu": c_db}


# -- timing ------------------------------------------------------------------
def nearest_rank(values: list[float], p: float) -> float:
    """The smallest value with at least ``p`` % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


# (label, kind, parameters, p95 target in ms or None when only reported)
QUERIES: list[tuple[str, str, list[tuple[str, str]], float | None]] = [
    ("page: unfiltered", "page", [], 30),
    ("page: status=failed tool=github.*", "page",
     [("status", "failed"), ("tool", "github.*")], 30),
    ("page: q='rate limit'", "page", [("q", "rate limit")], None),
    ("page: q no match (worst case)", "page", [("q", "no such text")], None),
    ("meta: last 24 h", "meta", [("from", "-24h")], 300),
    ("meta: last 24 h, status+tool", "meta",
     [("from", "-24h"), ("status", "failed"), ("tool", "github.*")], None),
    ("meta: all time", "meta", [], 1500),
]


def run_queries(store: Store, anchor: int, warmup: int, runs: int,
                only: str | None) -> list[tuple[str, float, float, float, float | None]]:
    results = []
    for label, kind, params, target in QUERIES:
        if only and only not in label:
            continue
        if kind == "page":
            query = parse_list_params([*params, ("meta", "false")], now=anchor)
            fn: Callable[[], Any] = lambda q=query: store.list_executions(q)  # noqa: E731
        else:
            query = parse_list_params(params, now=anchor)
            fn = lambda q=query: store.list_meta(q)  # noqa: E731
        wall, cpu = timed(fn, warmup, runs)
        p50, p95, cpu50 = nearest_rank(wall, 50), nearest_rank(wall, 95), nearest_rank(cpu, 50)
        results.append((label, p50, p95, cpu50, target))
        print(f"  {label:<36} p50 {p50:>8.1f} ms   p95 {p95:>8.1f} ms   "
              f"(CPU p50 {cpu50:>8.1f} ms)", flush=True)
    return results


def profile(db: Database, store: Store, anchor: int, only: str | None) -> None:
    """Each statement one call runs: its time (best of 3, rows fetched) and its plan."""
    seen: list[tuple[str, Any]] = []

    @event.listens_for(db.read_engine, "before_cursor_execute")
    def _record(_conn: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if statement != "BEGIN":
            seen.append((statement, params))

    for label, kind, params, _ in QUERIES:
        if only and only not in label:
            continue
        if kind == "page":
            params = [*params, ("meta", "false")]
        query = parse_list_params(params, now=anchor)
        call = store.list_executions if kind == "page" else store.list_meta
        seen.clear()
        t0 = time.perf_counter()
        call(query)
        print(f"\n=== {label}: {(time.perf_counter() - t0) * 1000:.1f} ms")
        statements = list(seen)
        with db.read_engine.connect() as conn:
            for statement, bound in statements:
                best = min(_fetch_time(conn, statement, bound) for _ in range(3))
                print(f"--- {best:8.1f} ms  {' '.join(statement.split())[:300]}  {bound}")
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, bound):
                    print(f"      plan: {row[3]}")
    event.remove(db.read_engine, "before_cursor_execute", _record)


def _fetch_time(conn: Any, statement: str, params: Any) -> float:
    t0 = time.perf_counter()
    conn.exec_driver_sql(statement, params).fetchall()
    return (time.perf_counter() - t0) * 1000


# -- main --------------------------------------------------------------------
def add_pragmas(db: Database, pragmas: list[str]) -> None:
    for engine in (db.write_engine, db.read_engine):
        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in pragmas:
                cur.execute(f"PRAGMA {pragma}")
            cur.close()


def table_sizes(store: Store) -> dict[str, int]:
    with store.db.read_engine.connect() as conn:
        return {name: conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
                for name in ("execution", "execution_tool_call", "execution_event",
                             "execution_interaction")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--database", default="bench/out/store.db")
    parser.add_argument("--reuse", action="store_true",
                        help="time queries on an already loaded database")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", help="time only the queries whose label contains this")
    parser.add_argument("--pragma", action="append", default=[],
                        help="extra PRAGMA for every connection, e.g. cache_size=-65536")
    parser.add_argument("--profile", action="store_true",
                        help="print each statement's time (best of 3), then exit")
    args = parser.parse_args()
    tune_gc()  # as `runyard serve` runs

    path = Path(args.database)
    url = f"sqlite:///{path}"
    if not args.reuse:
        for suffix in ("", "-wal", "-shm", "-lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        upgrade(url)
    elif not path.exists():
        parser.error(f"--reuse: {path} does not exist")
    else:
        # A file loaded by older code gets the newer indexes (revision 0005:
        # a few seconds on 1 M runs), so the queries are timed on today's schema.
        upgrade(url)
    db = open_database(url)
    add_pragmas(db, args.pragma)
    store = Store(db)
    print(f"database {path}; pragmas {args.pragma or 'app defaults'}\nmachine: {describe()}")

    loaded: dict[str, float] | None = None
    if not args.reuse:
        print(f"loading {args.executions:,} executions in batches of {BATCH:,} ...")
        loaded = load(store, args.executions)
    sizes = table_sizes(store)
    print("rows: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items())
          + f"; file {path.stat().st_size / 2**20:,.0f} MiB")
    with db.read_engine.connect() as conn:
        anchor = conn.execute(select(func.max(executions.c.created_at))).scalar_one() + 60_000

    if args.profile:
        profile(db, store, anchor, args.only)
        return
    print(f"timing queries: {args.warmup} warm-up + {args.runs} runs each ...")
    results = run_queries(store, anchor, args.warmup, args.runs, args.only)

    print("\n| measure | result | target |\n|---|---|---|")
    if loaded is not None:
        bulk = loaded["validate"] + loaded["database"]
        rate = loaded["rows"] / bulk
        print(f"| bulk load, rows/s ({loaded['rows']:,} rows in {bulk:,.0f} s) | "
              f"{rate:,.0f} | ≥ 100,000 {'✓' if rate >= 100_000 else '✗'} |")
        print(f"| — of which validation / database | {loaded['validate']:,.0f} s / "
              f"{loaded['database']:,.0f} s ({loaded['database'] / bulk:.0%} database) | |")
        print(f"| — database only, rows/s | {loaded['rows'] / loaded['database']:,.0f} | |")
        cpu = loaded["validate_cpu"] + loaded["database_cpu"]
        print(f"| — on CPU time: rows/s (validation / database CPU s) | "
              f"{loaded['rows'] / cpu:,.0f} ({loaded['validate_cpu']:,.0f} / "
              f"{loaded['database_cpu']:,.0f}) | |")
        print(f"| (payload generation, not counted) | {loaded['generate']:,.0f} s | |")
    for label, p50, p95, cpu50, target in results:
        verdict = "report" if target is None else (
            f"p95 < {target:,.0f} ms {'✓' if p95 < target else '✗'}")
        print(f"| {label}, p50 / p95 ms (CPU p50) | {p50:,.1f} / {p95:,.1f} ({cpu50:,.1f}) "
              f"| {verdict} |")
    db.dispose()


if __name__ == "__main__":
    main()
