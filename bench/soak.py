"""Soak (issue 7): minutes of mixed, open-loop load on one ``runyard serve``.

Starts one server on a fresh SQLite file (seeded with ``--seed-runs`` finished
runs over the last 24 h, so the page has something to show), then, at once:

- ``--ingest-rate`` (300) ingest requests/s: runs recorded step by step on the
  live endpoints (create, tool call start and finish, events, final status)
  and small ``/api/ingest`` batches (``bench/_soak_ingest.py``);
- ``--clients`` (200) SSE clients connected throughout, reading everything:
  list streams (some filtered, some ``format=html`` as the page's live mode
  asks) and a few run streams (``bench/_soak_sse.py``);
- ``--page-rate`` (20) page loads/s: whole pages, drawers and the htmx
  fragments the page fetches (``bench/_soak_pages.py``).

Requests are sent on schedule whether or not earlier ones were answered
(``bench/_openloop.py``); latency counts from when a request was due. After
``--warmup`` seconds the measured window of ``--minutes`` starts. The
warm-up is 120 s: the server's working set (SQLite's page caches, the
connection pools, the threads) is still filling 30 s in, and with a 30 s
warm-up most of the window's RSS growth came in its first half minute.
Prints, as Markdown: requests per route, errors, p50/p95/p99, achieved rates, SSE
messages against what was due, the server's RSS at the start of the window
and at its end, and the CPU of the server and of each client process (is the
client the bottleneck?).

The rate limiter and the per-client stream cap are switched off for the
server (``RUNYARD_RATE_LIMIT_PER_S=0``, ``RUNYARD_MAX_STREAMS_PER_CLIENT=0``):
all this load comes from one address. ``--token`` creates a write and a read
token first (``runyard token create``) and sends them as Bearer headers, so
the figures include authentication. ``--workers N`` serves from N processes
(``runyard serve --workers N``); the server's CPU and RSS are then summed over
its process tree.

    .venv/bin/python bench/soak.py [--minutes 10] [--token] [--workers 2] [--profile out.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._http import Pool
from bench._machine import cpu_ticks, describe
from bench._openloop import Recorder, open_loop
from bench._server import (
    ROOT,
    cpu_by_process,
    free_port,
    memory_kb,
    raise_fd_limit,
    start_server,
    stop_server,
)
from bench._soak_ingest import IngestMix, finished_run
from bench._soak_pages import PageMix
from bench._soak_report import report
from bench._soak_sse import sse_process

OUT = ROOT / "bench" / "out"
SERVER_ENV = {"RUNYARD_RATE_LIMIT_PER_S": "0", "RUNYARD_MAX_STREAMS_PER_CLIENT": "0"}


def create_token(db: Path, role: str) -> str:
    """``runyard token create``; the token is the last line of its output."""
    env = {**os.environ, "RUNYARD_DATABASE_URL": f"sqlite:///{db}"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "token", "create", "--role", role,
         "--name", f"soak-{role}"], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"--token: `runyard token create --role {role}` failed (exit "
                         f"{done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1].strip()


def seed(port: int, headers: dict[str, str], runs: int) -> list[str]:
    """``runs`` finished runs over the last 24 h, through ``/api/ingest``."""
    rng = random.Random(7)
    ids = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as c:
        for first in range(0, runs, 250):
            batch = [finished_run(rng, f"seed-{i:06d}", ago_ms=86_400_000)
                     for i in range(first, min(runs, first + 250))]
            c.post("/api/ingest", json={"executions": batch}).raise_for_status()
            ids += [r["id"] for r in batch]
    return ids


def load_process(kind: str, port: int, headers: dict[str, str], rate: float,
                 window: tuple[float, float, float], seed_: int, run_ids: list[str],
                 out: Any) -> None:
    """Process entry: send ``kind`` (ingest or pages) load on schedule over
    ``window`` (start, end of warm-up, end); put the figures on ``out``."""
    raise_fd_limit()
    start, measure_from, end = window

    async def main() -> None:
        pool = Pool("127.0.0.1", port, 256 if kind == "ingest" else 64, headers)
        recorder = Recorder(measure_from)
        cpu0 = time.process_time()
        if kind == "ingest":
            mix: IngestMix | PageMix = IngestMix(pool, recorder, f"soak{seed_}", seed_)
        else:
            mix = PageMix(pool, recorder, seed_, run_ids)
            refresher = asyncio.create_task(mix.refresh_ids(end))
        loop = await open_loop(rate, start, end, measure_from, mix.fire)
        result: dict[str, Any] = {
            "kind": kind, "rate": rate, "loop": loop.summary(),
            "cpu_s": time.process_time() - cpu0, "wall_s": time.monotonic() - start,
            "routes": {name: asdict(s) for name, s in recorder.routes.items()}}
        if isinstance(mix, IngestMix):
            result["created"], result["ended"] = mix.created, mix.ended
        else:
            refresher.cancel()
        pool.close()
        out.put(result)

    uvloop.run(main())


def profile(pid: int, path: Path, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy on the server for ``seconds`` (raw collapsed stacks for ``.txt``).

    Only samples holding the GIL (``--gil``): one process runs Python on one
    core at a time, so those are what limits it; threads waiting for the
    writer connection or for the GIL itself would otherwise fill the profile."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit(f"--profile: no {spy} (.venv/bin/pip install py-spy)")
    fmt = "raw" if path.suffix == ".txt" else "speedscope" if path.suffix == ".json" else (
        "flamegraph")
    # --subprocesses: the worker processes of `serve --workers`, in one profile.
    return subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(seconds),
                             "-r", "50", "--gil", "--subprocesses", "-f", fmt, "-o", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def soak(args: argparse.Namespace, db: Path, log_path: Path) -> dict[str, Any]:
    """Start the server, seed, run the load; return everything the report needs."""
    port = free_port()
    env = {**SERVER_ENV, **({"RUNYARD_WORKERS": str(args.workers)} if args.workers > 1 else {})}
    facts: dict[str, Any] = {"load_before": os.getloadavg(), "server_env": env,
                             "machine": describe()}
    with log_path.open("wb") as log:
        server = start_server(db, port, env, log)
        try:
            read_h: dict[str, str] = {}
            write_h: dict[str, str] = {}
            if args.token:
                write_h = {"Authorization": f"Bearer {create_token(db, 'write')}"}
                read_h = {"Authorization": f"Bearer {create_token(db, 'read')}"}
            t0 = time.monotonic()
            seed_ids = seed(port, write_h, args.seed_runs)
            print(f"seeded {len(seed_ids)} runs in {time.monotonic() - t0:.1f} s", flush=True)
            time.sleep(2)   # the hub has sent the seed's messages before the streams connect
            facts.update(run_load(args, port, server.pid, read_h, write_h, seed_ids))
            facts["db_runs"] = httpx.get(
                f"http://127.0.0.1:{port}/api/executions?limit=1", headers=read_h,
                timeout=60).json()["meta"]["total"]
            facts["server_alive"] = server.poll() is None
        finally:
            stop_server(server)
    with sqlite3.connect(db) as conn:
        facts["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
    facts["db_mb"] = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [i for i, line in enumerate(lines) if "ERROR" in line]
    facts["log_path"] = log_path
    facts["log_errors"] = len(errors)
    # The first error with its traceback, to say what went wrong.
    facts["log_excerpt"] = lines[errors[0]:errors[0] + 40] if errors else []
    return facts


def run_load(args: argparse.Namespace, port: int, pid: int, read_h: dict[str, str],
             write_h: dict[str, str], seed_ids: list[str]) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    stop, ready, sse_out, load_out = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    sse = ctx.Process(target=sse_process,
                      args=("127.0.0.1", port, args.clients, read_h, ready, stop, sse_out))
    if args.clients:
        sse.start()
        if not ready.wait(120):
            raise SystemExit("the SSE clients did not connect in 120 s")
    start = time.monotonic() + 1
    window = (start, start + args.warmup, start + args.warmup + args.minutes * 60)
    # A rate of 0 leaves that part out (to measure the parts one at a time).
    procs = [ctx.Process(target=load_process, args=(
        "ingest", port, write_h, args.ingest_rate / args.ingest_procs, window, k,
        [], load_out)) for k in range(args.ingest_procs if args.ingest_rate else 0)]
    if args.page_rate:
        procs.append(ctx.Process(target=load_process, args=(
            "pages", port, read_h, args.page_rate, window, 99, seed_ids, load_out)))
    for p in procs:
        p.start()
    print(f"load: warm-up {args.warmup:.0f} s, then {args.minutes:g} min measured", flush=True)
    samples, spy = [], None
    while (now := time.monotonic()) < window[2]:
        mem = memory_kb(pid)
        each = cpu_by_process(pid)
        samples.append({"t": now - window[1], "cpu": sum(each.values()), "cpu_each": each,
                        "load": os.getloadavg()[0], "ticks": cpu_ticks(), **mem})
        if args.profile and spy is None and now >= window[1] + 10:
            spy = profile(pid, Path(args.profile).resolve(), args.profile_seconds)
        if len(samples) % 60 == 0:
            print(f"  {now - window[1]:6.0f} s: server RSS {mem['VmRSS'] / 1024:.0f} MB "
                  f"(heap {mem['RssAnon'] / 1024:.0f}, file {mem['RssFile'] / 1024:.0f}), "
                  f"load {samples[-1]['load']:.2f}", flush=True)
        time.sleep(1)
    each = cpu_by_process(pid)
    samples.append({"t": time.monotonic() - window[1], "cpu": sum(each.values()),
                    "cpu_each": each, "load": os.getloadavg()[0], "ticks": cpu_ticks(),
                    **memory_kb(pid), "processes": len(each)})
    loads = [load_out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    time.sleep(3)   # the last messages reach the streams
    stop.set()
    clients, connected, sse_cpu = sse_out.get(timeout=120) if args.clients else ([], 0, 0.0)
    if args.clients:
        sse.join(30)
    if spy is not None:
        spy.wait(args.profile_seconds + 60)
    return {"loads": loads, "clients": clients, "connected": connected, "sse_cpu": sse_cpu,
            "samples": samples, "measured_s": args.minutes * 60, "warmup_s": args.warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="measured window")
    parser.add_argument("--warmup", type=float, default=120, help="seconds before it")
    parser.add_argument("--ingest-rate", type=float, default=300)
    parser.add_argument("--page-rate", type=float, default=20)
    parser.add_argument("--clients", type=int, default=200, help="SSE clients")
    parser.add_argument("--ingest-procs", type=int, default=1,
                        help="client processes sharing the ingest rate")
    parser.add_argument("--seed-runs", type=int, default=2000)
    parser.add_argument("--token", action="store_true", help="send Bearer tokens")
    parser.add_argument("--workers", type=int, default=1,
                        help="serve --workers N (CPU and RSS are then summed over them)")
    parser.add_argument("--profile", help="py-spy the server into this file (.txt: raw "
                        "collapsed stacks, .json: speedscope, else a flame graph SVG)")
    parser.add_argument("--profile-seconds", type=int, default=60)
    args = parser.parse_args()
    raise_fd_limit()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        facts = soak(args, Path(tmp) / "soak.db", OUT / "soak-server.log")
    print(report(args, facts))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
