"""What machine a benchmark ran on, and how fast it is, for comparing figures
taken on different machines.

Machines of the same kind have differed by more than 2x here (the same code:
the bulk load's first 100,000 runs at 106,443 rows/s on one, 48,468 on
another), so a figure alone says little. ``reference_ms`` times one fixed
piece of work shaped like the store's (Python building rows, JSON encoding,
SQLite inserting them into an indexed table in memory) and each benchmark
prints it beside its results: a bench figure divided by that ratio is the
comparable one. It is rough: on this workplace's shared machines it moved
between 83 and 159 ms from one process to the next within an hour (within
one process, by ~5%), so compare several readings, not one.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sqlite3
import time
from pathlib import Path

_ROWS = 20_000


def cpu_model() -> str:
    """The CPU's model name, as the kernel reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _work() -> None:
    encode = json.JSONEncoder(separators=(",", ":")).encode
    rows = [(f"run-{i:08d}", i % 7, i * 37 % 10_007, encode({"q": f"name #{i}", "page": i % 9}))
            for i in range(_ROWS)]
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, k INTEGER, d INTEGER, args TEXT)")
        conn.execute("CREATE INDEX t_d ON t (d, id)")
        with conn:
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
        conn.execute("SELECT k, count(*) FROM t GROUP BY k").fetchall()
    finally:
        conn.close()


def reference_ms(repeat: int = 5) -> float:
    """Milliseconds of the reference work, the best of ``repeat`` tries
    (~0.05-0.15 s each): lower is a faster machine."""
    best = float("inf")
    # Without the collector: the benchmarks set its thresholds as the server
    # does (app.process.tune_gc), and the figure must not depend on them.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            _work()
            best = min(best, time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return best * 1000


def cpu_ticks() -> tuple[int, int]:
    """(ticks stolen, all ticks) of every CPU since boot, from ``/proc/stat``;
    (0, 0) where there is none.

    Steal is time the hypervisor gave this virtual machine's CPUs to someone
    else while they had work. On one of the workplace's shared machines it was
    27% of all CPU time since boot, most of that time idle: a likely reason
    why one machine's figures came out half or a quarter of another's for the
    same code.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0, 0
    ticks = [int(f) for f in fields[1:9]]   # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Percent of all CPU time stolen by the host between two ``cpu_ticks()``."""
    total = after[1] - before[1]
    return 100 * (after[0] - before[0]) / total if total > 0 else 0.0


def describe() -> str:
    """One line: CPUs, Python, SQLite, the reference time, the share of CPU
    time the host took meanwhile, and the load average."""
    before = cpu_ticks()
    reference = reference_ms()
    stolen = steal_pct(before, cpu_ticks())
    return (f"{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}; reference work {reference:.0f} ms "
            f"(bench/_machine.py; lower is faster; {stolen:.0f}% of CPU time stolen by "
            f"the host meanwhile); load average {os.getloadavg()[0]:.2f}")
