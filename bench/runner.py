"""Runner benchmark (issue 5): job overhead, job throughput, output throughput.

What it measures, through the real code (store, worker, asyncio subprocesses,
real commands), on a fresh database:

1. Overhead with an idle worker, ``--overhead`` jobs one after another:
   - submit → start: from just before ``Store.submit_job`` to the first line
     of ``sh -c 'date +%s%N; …'`` (the command reports when it began; ``date``
     itself is part of the figure, so it overstates by a millisecond or so);
   - exit → terminal: from the command's last line (``date +%s%N`` just
     before it exits) to the commit of its terminal status
     (``Store.finish_job`` returning).
   In-process pool (``runyard serve --allow-exec``): the submission wakes the
   worker as ``POST /api/jobs`` does. Separate worker (``runyard worker``,
   another process): on SQLite it finds the job by polling every
   ``RUNYARD_WORKER_POLL_S`` (0.05 s), so submissions there come at random
   moments (a pause of 0 to 100 ms before each) rather than in step with its
   polls; on PostgreSQL the commit's NOTIFY wakes it.
2. Throughput: ``--jobs`` ``true`` jobs queued at once, one worker with
   ``--concurrency`` slots; jobs/s from the first claim to the last terminal
   status.
3. Output: one job printing ``--lines`` lines (``seq``); lines/s recorded, from
   submit to the terminal status (every line is an event in the table by then).

p50/p95 are nearest-rank. Usage::

    .venv/bin/python bench/runner.py                        # SQLite in bench/out
    .venv/bin/python bench/runner.py --database-url postgresql://postgres@127.0.0.1/bench_runner
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from app.db.engine import open_database
from app.db.migrate import upgrade
from app.runner.worker import Worker
from app.settings import Settings
from app.store import Store
from app.store.inputs import TERMINAL, JobSubmit
from app.store.jobs import Limits

OUT = Path(__file__).resolve().parent / "out"
TIMED = "date +%s%N; date +%s%N"


class TimedStore(Store):
    """The store, noting when each job's terminal status committed."""

    finished: dict[str, int]

    def finish_job(self, execution_id: str, *args: Any) -> bool:
        done = super().finish_job(execution_id, *args)
        self.finished[execution_id] = time.time_ns()
        return done


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Pool:
    """A worker on its own event loop in a thread, as ``serve`` hosts one."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.worker = Worker(store, settings)
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)

            async def run() -> None:
                self.stopping = asyncio.Event()
                ready.set()
                await self.worker.run(self.stopping)
            self.loop.run_until_complete(run())

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.worker.wake)

    def stop(self) -> None:
        assert self.stopping is not None
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join()


def submit(store: Store, command: dict[str, Any]) -> str:
    answer, _ = store.submit_job(JobSubmit.model_validate({"command": command}), Limits())
    return str(answer["execution_id"])


def wait(store: Store, run: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        execution, _ = store.get_execution(run)
        if execution["status"] in TERMINAL:
            return execution
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run} did not finish")
        time.sleep(0.001)


def stdout_of(store: Store, run: str) -> list[str]:
    rows, _ = store.events(run, types=("stdout",), limit=10)
    return [r["message"] for r in rows]


def overhead(store: TimedStore, n: int, wake: Any, jitter_s: float = 0.0,
             ) -> tuple[list[float], list[float]]:
    start_ms, end_ms = [], []
    rng = random.Random(5)
    for _ in range(n):
        time.sleep(rng.uniform(0, jitter_s))
        t0 = time.time_ns()
        run = submit(store, {"shell": TIMED})
        if wake is not None:
            wake()
        wait(store, run)
        began, ended = (int(x) for x in stdout_of(store, run))
        start_ms.append((began - t0) / 1e6)
        if run in store.finished:
            end_ms.append((store.finished[run] - ended) / 1e6)
        else:   # finished in another process: its completed_at (ms) is what we have
            execution, _ = store.get_execution(run)
            end_ms.append(_ms(execution["completed_at"]) - ended / 1e6)
    return start_ms, end_ms


def _ms(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def line(name: str, values: list[float]) -> str:
    return f"| {name} | {pct(values, 50):.1f} | {pct(values, 95):.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file)")
    parser.add_argument("--overhead", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    url = args.database_url
    if url is None:
        OUT.mkdir(exist_ok=True)
        path = OUT / "runner.db"
        for suffix in ("", "-wal", "-shm", "-lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    upgrade(url)
    store = TimedStore(open_database(url))
    store.finished = {}
    settings = Settings(database_url=url, worker_concurrency=args.concurrency)
    print(f"database: {url}; {os.cpu_count()} CPUs")

    # 1. overhead, in-process pool
    pool = Pool(store, settings.with_(worker_concurrency=1))
    overhead(store, 5, pool.wake)   # warm-up
    start_in, end_in = overhead(store, args.overhead, pool.wake)
    pool.stop()
    # 1b. overhead, separate worker process
    env = {**os.environ, "RUNYARD_DATABASE_URL": url, "RUNYARD_WORKER_CONCURRENCY": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        overhead(store, 5, None)
        start_out, end_out = overhead(store, min(args.overhead, 100), None, jitter_s=0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait()
    print("\n| overhead (ms) | p50 | p95 |\n|---|---|---|")
    print(line(f"submit → start, in-process pool ({args.overhead} jobs)", start_in))
    print(line("exit → terminal, in-process pool", end_in))
    how = "NOTIFY" if url.startswith("postgresql") else "polls every 0.05 s"
    print(line(f"submit → start, separate worker process ({how})", start_out))
    print(line("exit → terminal, separate worker process", end_out))

    # 2. throughput of `true` jobs
    runs = [submit(store, {"argv": ["true"]}) for _ in range(args.jobs)]
    t0 = time.monotonic()
    pool = Pool(store, settings)
    for run in runs:
        wait(store, run)
    elapsed = time.monotonic() - t0
    pool.stop()
    print(f"\nthroughput: {args.jobs} `true` jobs, concurrency {args.concurrency}: "
          f"{elapsed:.2f} s, {args.jobs / elapsed:.0f} jobs/s")

    # 3. output throughput
    pool = Pool(store, settings)
    t0 = time.monotonic()
    run = submit(store, {"argv": ["seq", "1", str(args.lines)]})
    pool.wake()
    execution = wait(store, run)
    elapsed = time.monotonic() - t0
    pool.stop()
    rows, _ = store.events(run, types=("stdout",), after_seq=args.lines - 5, limit=1000)
    recorded = int(rows[-1]["message"]) if rows else 0
    print(f"output: one job printing {args.lines:,} lines: {execution['status']}, "
          f"last line recorded {recorded:,}, {elapsed:.2f} s, "
          f"{args.lines / elapsed:,.0f} lines/s recorded")
    store.db.dispose()


if __name__ == "__main__":
    main()
