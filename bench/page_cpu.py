"""Server CPU per page load of the soak's page mix (issue 7), split into its parts.

What it measures
    The requests ``bench/_soak_pages.py`` sends (whole pages, the htmx
    fragments, a waterfall row, the filter command's help, and the JSON list
    it reads run ids from), each sent straight into the ASGI app in-process
    (no HTTP client: only the server's work is counted), client
    ``127.0.0.1:50000``, host ``127.0.0.1:8000``. For each route: the
    process's CPU time per request (``time.process_time``, every thread, so
    the facet's side read counts too), split into

    - ``store``: inside ``Store`` methods (SQL and row building),
    - ``views``: the rest of ``build.fill`` and friends (view models: rail,
      chart, drawer, URLs),
    - ``render``: Jinja (``TemplateResponse``),
    - ``rest``: routing, middleware, parsing the URL, the response.

    and ``sql``: the part of all that spent in SQLite's cursor calls
    (``execute`` and the fetches, every thread), which run without the GIL.
    The rest, ``py = CPU - sql``, holds the GIL: that is what saturates the
    soak's server (one process), the SQL runs beside it on the other core.
    ``gc``: of ``py``, the garbage collector's part (it runs wherever an
    allocation trips it, so it inflates the other columns at random).
    Weighted as the soak mixes them: the CPU of one second of its 20 page
    loads (``per 20 loads``), the figure issue 7 needs halved. Timing the
    cursor calls costs ~1 us per call, counted in ``sql``.

The clock is pinned (``app.times.now_ms``) one minute after the newest run,
so a file built hours ago still shows all its runs in the page's 24 h, and
``--dump`` writes every distinct response (status, headers that matter,
body) for a byte-for-byte comparison of two versions of the code (``--wide``
adds views the soak does not send: filters, sorts, every drawer tab, errors).

The database (``--database``) is built the first time: ``--runs`` finished
runs over ``--days`` (1) from the soak's own builder (two tool calls, six events each),
through ``Store.ingest``; with ``--demo``, the demo's varied week instead
(every status, interactions, labels, running runs).

Usage (from the repository root)::

    .venv/bin/python bench/page_cpu.py                       # builds bench/out/page_cpu.db
    .venv/bin/python bench/page_cpu.py --repeat 60 --only HX
    .venv/bin/python bench/page_cpu.py --profile bench/out/page_cpu.prof
    .venv/bin/python bench/page_cpu.py --dump bench/out/html-after --wide
    .venv/bin/python bench/page_cpu.py --database bench/out/demo.db --demo --runs 3000

To compare two versions, run the same command from a copy of the tree with
the other version (the script imports the ``app`` next to it) against the
same ``--database``, and ``diff -r`` the two ``--dump`` directories.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import json
import os
import random
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app.times
from app.db.migrate import upgrade
from app.demo import seed
from app.factory import create_app
from app.settings import Settings
from app.store import Store
from app.store.inputs import parse_ingest
from app.web import build, jobs, pages, templating
from bench._soak_ingest import finished_run
from bench._soak_pages import COMMANDS, LISTS, REFRESH_ROUTE, TABS, WEIGHTS, next_page

HX = {"HX-Request": "true"}
PARTS = ("store", "views", "render", "rest")
COLUMNS = (*PARTS, "sql", "py", "gc")
STORE_METHODS = ("list_rows", "page_meta", "count_runs", "known_values", "tool_counts",
                 "run_detail", "events_page", "tool_call", "list_executions", "full_value")
KEPT_HEADERS = ("content-type", "hx-push-url", "hx-retarget", "hx-reswap", "vary", "location")
Request = tuple[str, dict[str, str]]


class Meter:
    """Process CPU per part: a part's time excludes the parts called inside it."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._inner: list[float] = []

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def metered(*args: Any, **kwargs: Any) -> Any:
            self._inner.append(0.0)
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.process_time() - t0
                inner = self._inner.pop()
                self.spent[part] += took - inner
                if self._inner:
                    self._inner[-1] += took
        return metered

    def take(self) -> dict[str, float]:
        spent, self.spent = self.spent, dict.fromkeys(PARTS, 0.0)
        return spent


class SqlClock:
    """Thread CPU spent inside SQLite cursor calls, summed over threads."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.spent += seconds

    def take(self) -> float:
        with self._lock:
            spent, self.spent = self.spent, 0.0
        return spent


SQL = SqlClock()


class GcClock:
    """Process CPU spent in the garbage collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._start = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.spent += time.process_time() - self._start

    def take(self) -> float:
        spent, self.spent = self.spent, 0.0
        return spent


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: Any, *args: Any) -> Any:
        t0 = time.thread_time()
        try:
            return method(self, *args)
        finally:
            SQL.add(time.thread_time() - t0)
    return call


class TimedCursor(sqlite3.Cursor):
    execute = _timed(sqlite3.Cursor.execute)
    executemany = _timed(sqlite3.Cursor.executemany)
    fetchone = _timed(sqlite3.Cursor.fetchone)
    fetchmany = _timed(sqlite3.Cursor.fetchmany)
    fetchall = _timed(sqlite3.Cursor.fetchall)


class TimedConnection(sqlite3.Connection):
    def cursor(self, factory: Any = TimedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)


def time_sql() -> None:
    """Every SQLite connection made from now on times its cursor calls into ``SQL``."""
    connect = SQLiteDialect_pysqlite.connect

    def timed_connect(self: Any, *cargs: Any, **cparams: Any) -> Any:
        return connect(self, *cargs, factory=TimedConnection, **cparams)

    SQLiteDialect_pysqlite.connect = timed_connect  # type: ignore[method-assign]


def build_database(path: Path, runs: int, days: int, demo: bool) -> None:
    """``runs`` finished runs over the last ``days`` days, as the soak seeds them
    (or, with ``demo``, the demo's varied runs: every status, interactions)."""
    url = f"sqlite:///{path}"
    upgrade(url)
    rng = random.Random(7)
    with TestClient(create_app(Settings(database_url=url, demo=False))) as client:
        store: Store = client.app.state.store  # type: ignore[attr-defined]
        if demo:
            seed(store, runs, days=days)
            return
        for first in range(0, runs, 250):
            batch = [finished_run(rng, f"seed-{i:06d}", ago_ms=days * 86_400_000)
                     for i in range(first, min(runs, first + 250))]
            store.ingest(parse_ingest({"executions": batch}))


def pin_clock(path: Path) -> int:
    """Pin ``now_ms`` to a minute after the newest run of ``path``; returns it."""
    with sqlite3.connect(path) as conn:
        newest = conn.execute("SELECT max(created_at) FROM execution").fetchone()[0]
    pinned = int(newest) + 60_000

    class Clock:
        """``app.times``'s view of the ``time`` module: the clock pinned, the
        rest (``gmtime``) as it is."""

        gmtime = staticmethod(time.gmtime)

        @staticmethod
        def time_ns() -> int:
            return pinned * 1_000_000

    app.times.time = Clock  # type: ignore[assignment]
    return pinned


async def asgi_get(asgi: Any, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                           bytes]:
    """One GET straight into the app: status, headers, body."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(),
        "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"),
                    *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }
    sent = False
    status, out_headers, body = 0, {}, bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.update((k.decode(), v.decode()) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await asgi(scope, receive, send)
    return status, out_headers, bytes(body)


def requests_of(route: str, runs: list[str], get: Callable[[str, dict[str, str]], bytes],
                first_call: dict[str, str]) -> list[Request]:
    """Every variant of a soak route, as ``_soak_pages.PageMix.fire`` builds them."""
    def run_paths(fmt: Callable[[str], str]) -> list[str]:
        return [fmt(quote(r, safe="")) for r in runs]

    html = {"Accept": "text/html"}
    if route == "GET / (page)":
        return [("/", html)]
    if route == "GET /?status=failed (page)":
        return [("/?status=failed", html)]
    if route == "GET /?run= (page + drawer)":
        return [(p, html) for p in run_paths(lambda r: f"/?run={r}")]
    if route == "HX drawer":
        return [(f"/?run={quote(r, safe='')}{TABS[i % 3]}",
                 {**html, **HX, "HX-Target": "drawer"}) for i, r in enumerate(runs)]
    if route == "HX list":
        return [(p, {**html, **HX, "HX-Target": "list"}) for p in LISTS]
    if route == "HX more (cursor)":
        out = []
        for p in LISTS:
            more = next_page(get(p, {**html, **HX, "HX-Target": "list"}))
            if more:
                out.append((more, {**html, **HX, "HX-Target": "more"}))
        return out
    if route == "HX rail":
        return [("/", {**html, **HX, "HX-Target": "rail"})]
    if route == "HX chart":
        return [("/?status=failed", {**html, **HX, "HX-Target": "chart"})]
    if route == "GET /runs/command":
        return [("/runs/command?cmd=" + quote(c), {**html, **HX, "HX-Target": "cmd-help"})
                for c in COMMANDS]
    if route == "GET /runs/{id}/tool-calls/{id}":
        return [(f"/runs/{quote(r, safe='')}/tool-calls/{quote(first_call[r], safe='')}",
                 {**html, **HX}) for r in runs]
    assert route == REFRESH_ROUTE
    return [("/api/executions?limit=50&meta=false", {})]


def wide(runs: list[str], get: Callable[[str, dict[str, str]], bytes]) -> dict[str, list[Request]]:
    """Views beyond the soak's mix, for ``--dump --wide`` (compared, not timed)."""
    html = {"Accept": "text/html"}
    views = ["/?status=failed,timed_out&not_trigger=cli", "/?sort=duration_ms:desc",
             "/?sort=created_at:asc&from=-7d", "/?from=", "/?from=-1h&to=-10m",
             "/?tool=github.issues.list&not_status=completed", "/?elicitation=true",
             "/?q=batch&live=1", "/?tool_q=git", "/?status=bogus", "/?label=env%3Ddev",
             "/?min_duration_ms=2000", "/?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z"]
    out: dict[str, list[Request]] = {"wide: page": [(v, html) for v in views]}
    out["wide: fragments"] = [
        (v, {**html, **HX, "HX-Target": t}) for v in views
        for t in ("view", "rail", "chart", "list", "tool-facet")]
    tabs = ("", "&tab=tools", "&tab=events", "&tab=interactions", "&tab=events&ev_level=warn,error",
            "&tab=events&ev_after=3")
    out["wide: drawers"] = [(f"/?run={quote(r, safe='')}{t}", {**html, **HX, "HX-Target": d})
                            for r in runs[:6] for t in tabs for d in ("drawer", "events-more")]
    out["wide: drawers"] += [("/?run=no-such-run", html),
                             ("/?run=no-such-run", {**html, **HX, "HX-Target": "drawer"})]
    out["wide: more"] = [(p, {**html, **HX, "HX-Target": "more"}) for p in (
        next_page(get(v, {**html, **HX, "HX-Target": "list"})) for v in views[:4]) if p]
    commands = ("status:failed since:1h", "bogus:1", "status:nope")
    out["wide: command"] = [("/?cmd=" + quote(c), {**html, **h}) for c in commands
                            for h in ({}, {**HX, "HX-Target": "view"})]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="bench/out/page_cpu.db")
    parser.add_argument("--runs", type=int, default=20_000,
                        help="runs in the file when it is built (default 20,000)")
    parser.add_argument("--days", type=int, default=1,
                        help="over how many days those runs are spread (default 1)")
    parser.add_argument("--repeat", type=int, default=40, help="timed requests per route")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per route")
    parser.add_argument("--drawers", type=int, default=12, help="distinct runs to open")
    parser.add_argument("--only", help="only the routes whose name contains this")
    parser.add_argument("--profile", help="write a cProfile of the timed requests here")
    parser.add_argument("--demo", action="store_true",
                        help="build the file from the demo's data instead of the soak's")
    parser.add_argument("--dump", help="write each distinct response into this directory")
    parser.add_argument("--wide", action="store_true",
                        help="with --dump: also views the soak does not send (filters, "
                             "sorts, tabs, errors), to compare more of the page")
    args = parser.parse_args()
    path = Path(args.database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        build_database(path, args.runs, args.days, args.demo)
        print(f"built {path} ({args.runs:,} runs) in {time.monotonic() - t0:.0f} s")
    url = f"sqlite:///{path}"
    upgrade(url)
    pinned = pin_clock(path)
    time_sql()
    # As the soak's server: all of this comes from one address.
    asgi = create_app(Settings(database_url=url, demo=False, rate_limit_per_s=0))
    meter = Meter()
    gc_clock = GcClock()
    with TestClient(asgi) as client:      # only for the lifespan and its event loop
        store: Store = asgi.state.store
        for name in STORE_METHODS:
            setattr(store, name, meter.wrap("store", getattr(store, name)))
        build.fill = meter.wrap("views", build.fill)
        build.more_events = meter.wrap("views", build.more_events)
        jobs.controls_for = meter.wrap("views", jobs.controls_for)
        templating.templates.TemplateResponse = meter.wrap(  # type: ignore[method-assign]
            "render", templating.templates.TemplateResponse)
        portal = client.portal
        assert portal is not None

        profiler = cProfile.Profile() if args.profile else None
        profiling = False
        if profiler:
            # cProfile sees one thread: the page's reads run on the event loop's.
            async def inline(fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
                return fn(*a, **k)
            pages.run_in_threadpool = inline  # type: ignore[assignment]

        async def call(path_: str, headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                     bytes]:
            if profiler and profiling:
                profiler.enable()
            try:
                return await asgi_get(asgi, path_, headers)
            finally:
                if profiler:
                    profiler.disable()

        def send(path_: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
            return portal.call(call, path_, headers)

        def get(path_: str, headers: dict[str, str]) -> bytes:
            status, _, body = send(path_, headers)
            assert status == 200, (path_, status, body[:300])
            return body

        listed = json.loads(get("/api/executions?limit=200&meta=false", {}))["executions"]
        runs = [r["id"] for r in listed if r["tool_call_count"] > 0][::7][:args.drawers]
        routes = [*WEIGHTS, REFRESH_ROUTE]
        if args.only:
            routes = [r for r in routes if args.only in r]
        # The soak opens each run's "<run>-t0"; the demo's ids differ.
        first_call = {r: store.tool_calls(r)[0]["id"] for r in runs}
        plan = {route: requests_of(route, runs, get, first_call) for route in routes}
        print(f"database {path} ({path.stat().st_size / 2**20:,.0f} MiB), clock pinned at "
              f"{app.times.format_ms(pinned)}; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}; {args.warmup} warm-up + {args.repeat} timed "
              "requests per route")
        if args.dump:
            dump(Path(args.dump), {**plan, **(wide(runs, get) if args.wide else {})}, send)
        results: dict[str, tuple[float, dict[str, float]]] = {}
        for route, requests in plan.items():
            for i in range(args.warmup):
                get(*requests[i % len(requests)])
            meter.take()
            SQL.take()
            gc_clock.take()
            cpu = []
            parts = dict.fromkeys(COLUMNS, 0.0)
            profiling = True
            for i in range(args.repeat):
                c0 = time.process_time()
                get(*requests[i % len(requests)])
                cpu.append((time.process_time() - c0) * 1000)
                for part, spent in meter.take().items():
                    parts[part] += spent * 1000 / args.repeat
            profiling = False
            parts["rest"] = statistics.fmean(cpu) - sum(parts[p] for p in PARTS[:3])
            parts["sql"] = SQL.take() * 1000 / args.repeat
            parts["gc"] = gc_clock.take() * 1000 / args.repeat
            parts["py"] = statistics.fmean(cpu) - parts["sql"]
            results[route] = (statistics.median(cpu), parts)
    report(results)
    if profiler and args.profile:
        profiler.dump_stats(args.profile)
        print(f"profile written to {args.profile}")


def dump(out: Path, plan: dict[str, list[Request]],
         send: Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]) -> None:
    """Each distinct request's response, one file each, for ``diff -r``."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for route, requests in plan.items():
        for path_, headers in dict.fromkeys((p, tuple(h.items())) for p, h in requests):
            try:
                status, got, body = send(path_, dict(headers))
            except Exception as exc:     # the error is what is compared
                status, got, body = 0, {}, repr(exc).encode()
            head = "\n".join(f"{k}: {got[k]}" for k in KEPT_HEADERS if k in got)
            n += 1
            (out / f"{n:03d}.txt").write_bytes(
                f"{route}\nGET {path_} {dict(headers)}\n{status}\n{head}\n\n".encode() + body)
    print(f"{n} responses written to {out}")


def report(results: dict[str, tuple[float, dict[str, float]]]) -> None:
    print("\n| route | CPU p50 ms | mean: store | views | render | rest | of it: sql | py | gc |"
          "\n|---|---|---|---|---|---|---|---|---|")
    for route, (p50, parts) in results.items():
        print(f"| {route} | {p50:.2f} | " + " | ".join(f"{parts[p]:.2f}" for p in COLUMNS)
              + " |")
    weighted = [(WEIGHTS[r], results[r]) for r in results if r in WEIGHTS]
    if weighted:
        total = sum(w * p50 for w, (p50, _) in weighted)
        split = {p: sum(w * parts[p] for w, (_, parts) in weighted) for p in COLUMNS}
        mean = sum(split[p] for p in PARTS)
        print(f"\nper 20 loads (the soak's mix, weights {sum(w for w, _ in weighted)}): "
              f"{total:.1f} ms CPU from the p50s, {mean:.1f} from the means: "
              + ", ".join(f"{p} {split[p]:.1f}" for p in COLUMNS))


if __name__ == "__main__":
    main()
