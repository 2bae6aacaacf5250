"""Runs page benchmark (issue 3): server time of the page, the list partial, the drawer.

What it measures
    Server time of whole requests through the real app (routing, the store,
    Jinja rendering, headers), driven in-process by Starlette's TestClient so
    no network or browser time is counted:

    - the full page ``GET /`` for the default view (the last 24 h),
    - the list partial (``HX-Target: list``: the first 50 rows and the count),
    - the next list page (``HX-Target: more`` with a cursor),
    - the drawer (``HX-Target: drawer``) of a run with 500 tool calls and
      10,000 events, on each of its tabs.

    Each is run ``--warmup`` times, then ``--runs`` times; p50/p95 are
    nearest-rank in milliseconds.

The drawer run (id ``bench-drawer-500x10k``) is written into ``--database``
through the bulk ingest path the first time, so point ``--database`` at a
copy when the file belongs to another benchmark.

Usage (from the repository root)::

    .venv/bin/python bench/page.py --database bench/out/page.db
    .venv/bin/python bench/page.py --database bench/out/small.db --runs 50
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.db.migrate import upgrade
from app.factory import create_app
from app.settings import Settings
from app.store import Store
from app.store.errors import NotFound
from app.store.inputs import EventsAppend, parse_ingest
from app.times import format_ms, now_ms
from bench._machine import describe
from bench._timing import timed

DRAWER_RUN = "bench-drawer-500x10k"
HX = {"HX-Request": "true"}
TARGETS = {"page": 300.0, "list": 50.0, "drawer": 150.0}


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def ensure_drawer_run(store: Store) -> None:
    """A run with 500 tool calls (some nested) and 10,000 events, written once."""
    try:
        store.get_execution(DRAWER_RUN)
        return
    except NotFound:
        pass
    start = now_ms() - 3_600_000
    calls = []
    for i in range(500):
        t = start + i * 6_000
        calls.append({
            "id": f"{DRAWER_RUN}-tc{i}", "tool_path": f"svc{i % 12}.op{i % 7}",
            "parent_id": f"{DRAWER_RUN}-tc{i - 1}" if i % 5 else None,
            "status": "failed" if i % 50 == 49 else "completed",
            "args": {"page": i, "query": "x" * 80}, "result": {"items": list(range(10))},
            "started_at": format_ms(t), "completed_at": format_ms(t + 4_000),
        })
    events = [{"type": ("stdout", "stderr", "log")[i % 3],
               "level": "error" if i % 97 == 0 else "info",
               "message": f"line {i}: " + "y" * 60, "ts": format_ms(start + i * 300)}
              for i in range(10_000)]
    run = {"id": DRAWER_RUN, "name": "bench drawer", "status": "completed",
           "trigger_kind": "cli", "code": "./bench.sh\n" * 20,
           "created_at": format_ms(start), "started_at": format_ms(start),
           "completed_at": format_ms(start + 3_000_000), "tool_calls": calls,
           "events": events[:999]}
    store.ingest(parse_ingest({"executions": [run]}))
    for i in range(999, len(events), 1000):
        store.append_events(DRAWER_RUN, EventsAppend.model_validate(
            {"events": events[i:i + 1000]}))


def add_pragmas(store: Store, pragmas: list[str]) -> None:
    """Extra PRAGMAs on every read connection made from now on (the pool is emptied)."""
    @event.listens_for(store.db.read_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in pragmas:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    store.db.read_engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="bench/out/store.db")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", help="time only the measures whose label contains this")
    parser.add_argument("--pragma", action="append", default=[],
                        help="a PRAGMA for every read connection, to measure a proposal "
                             "(e.g. mmap_size=2147483648); the app's own are unchanged")
    args = parser.parse_args()
    path = Path(args.database)
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run bench/store.py first (or pass --database)")
    url = f"sqlite:///{path}"
    upgrade(url)   # a copy made by older code gets today's tables and indexes
    app = create_app(Settings(database_url=url, demo=False))
    print(f"database {path} ({path.stat().st_size / 2**20:,.0f} MiB); "
          f"pragmas {args.pragma or 'app defaults'}\nmachine: {describe()}")
    with TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as client:
        store: Store = app.state.store
        if args.pragma:
            add_pragmas(store, args.pragma)
        t0 = time.perf_counter()
        ensure_drawer_run(store)
        print(f"drawer run ready ({time.perf_counter() - t0:.1f} s)")
        first = client.get("/", headers={**HX, "HX-Target": "list"})
        assert first.status_code == 200, first.text[:500]
        if 'id="more" ' not in first.text or 'hx-get="' not in first.text.split('id="more" ')[1]:
            raise SystemExit(f"{path}: the default view (last 24 h) fits on one page, so there "
                             "is no next page to time; load more runs (bench/store.py)")
        cursor_href = first.text.split('id="more"', 1)[1].split('hx-get="', 1)[1].split('"', 1)[0]
        cursor_href = cursor_href.replace("&amp;", "&")

        def get(path: str, target: str | None = None) -> Callable[[], None]:
            headers = {**HX, "HX-Target": target} if target else {}

            def go() -> None:
                r = client.get(path, headers=headers)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            return go

        drawer = f"/?run={DRAWER_RUN}"
        measures: list[tuple[str, str, Callable[[], None]]] = [
            ("page", "full page, default 24 h view", get("/")),
            ("page", "full page, 24 h, status=failed", get("/?status=failed")),
            ("list", "list partial (50 rows + count), 24 h", get("/", "list")),
            ("list", "next list page (cursor)", get(cursor_href, "more")),
            ("drawer", "drawer, overview tab", get(drawer, "drawer")),
            ("drawer", "drawer, tool calls tab (500)", get(drawer + "&tab=tools", "drawer")),
            ("drawer", "drawer, events tab (first 200)", get(drawer + "&tab=events", "drawer")),
            ("drawer", "full page with the drawer open", get(drawer)),
        ]
        rows = []
        print(f"timing: {args.warmup} warm-up + {args.runs} runs each ...")
        for kind, label, fn in measures:
            if args.only and args.only not in label:
                continue
            values, cpu = timed(fn, args.warmup, args.runs)
            p50, p95 = nearest_rank(values, 0.5), nearest_rank(values, 0.95)
            cpu50 = nearest_rank(cpu, 0.5)
            target = TARGETS[kind] if "full page with" not in label else None
            print(f"  {label:42s} p50 {p50:9.1f} ms   p95 {p95:9.1f} ms   "
                  f"(CPU p50 {cpu50:7.1f} ms)", flush=True)
            rows.append((label, p50, p95, cpu50, target))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("\n| measure | p50 ms | p95 ms | CPU p50 ms | target |\n|---|---|---|---|---|")
    for label, p50, p95, cpu50, target in rows:
        verdict = "report" if target is None else (
            f"p95 < {target:.0f} ms {'✓' if p95 < target else '✗'}")
        print(f"| {label} | {p50:,.1f} | {p95:,.1f} | {cpu50:,.1f} | {verdict} |")


if __name__ == "__main__":
    main()
