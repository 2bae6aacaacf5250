"""Open-loop request scheduling and its bookkeeping, for ``bench/soak.py``.

Open loop: request ``i`` is due at ``start + i / rate`` and is sent then,
whether or not earlier ones have been answered, so a slow server meets a
growing queue instead of a politely slower client (closed-loop load hides
exactly the latency it causes: "coordinated omission"). Latency is measured
from the *due* time, so time a request spent waiting in the client (for a
pooled connection, or for the event loop) counts against it.

Whether the client kept up is measured, not assumed: ``lag`` is how late each
request left compared with its due time, and the worker's own CPU share is
reported next to it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench._http import Response

ERROR_SAMPLES = 5


@dataclass
class RouteStats:
    """One route's counts; latencies (ms) only of requests due after warm-up."""

    sent: int = 0
    errors: int = 0
    timeouts: int = 0      # of the errors: no answer within the client's timeout
    refused: int = 0       # of the errors: 503, the server too busy (or storage failing)
    warmup_sent: int = 0
    warmup_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    # When failed requests were due, in whole seconds from the end of warm-up
    # (negative: during it): a stall shows as a run of seconds.
    error_seconds: dict[int, int] = field(default_factory=dict)


class Recorder:
    """Counts and latencies per route name, split at the end of warm-up."""

    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.routes: dict[str, RouteStats] = {}

    def record(self, route: str, due: float, response: Response | None,
               error: BaseException | None = None) -> bool:
        """Note one finished request (``response`` None: it raised ``error``);
        True when it succeeded (a 2xx)."""
        stats = self.routes.setdefault(route, RouteStats())
        ok = response is not None and 200 <= response.status < 300
        if due < self.measure_from:
            stats.warmup_sent += 1
            stats.warmup_errors += not ok
        else:
            stats.sent += 1
            stats.errors += not ok
            stats.timeouts += isinstance(error, TimeoutError)
            stats.refused += response is not None and response.status == 503
            stats.latencies.append((time.monotonic() - due) * 1000)
        if not ok:
            second = math.floor(due - self.measure_from)
            stats.error_seconds[second] = stats.error_seconds.get(second, 0) + 1
        if not ok and len(stats.samples) < ERROR_SAMPLES:
            stats.samples.append(
                f"{response.status} {response.body[:200]!r}" if response is not None
                else f"{type(error).__name__}: {error}")
        return ok

    async def send(self, route: str, due: float,
                   call: Callable[[], Awaitable[Response]]) -> Response | None:
        """Run ``call`` and record it; the response when it was a 2xx, else None."""
        try:
            response = await call()
        except Exception as exc:   # any failure to get an answer is an error to count
            self.record(route, due, None, exc)
            return None
        return response if self.record(route, due, response) else None


@dataclass
class LoopReport:
    """How well the schedule was kept."""

    due: int = 0
    lags_ms: list[float] = field(default_factory=list)
    max_in_flight: int = 0
    unfinished: int = 0

    def summary(self) -> dict[str, Any]:
        """p50/p99/max of the lag, the peak number in flight, and what never ended."""
        lags = sorted(self.lags_ms) or [0.0]
        return {"due": self.due, "lag_p50_ms": pct(lags, 50), "lag_p99_ms": pct(lags, 99),
                "lag_max_ms": lags[-1], "max_in_flight": self.max_in_flight,
                "unfinished": self.unfinished}


async def open_loop(rate: float, start: float, end: float, measure_from: float,
                    fire: Callable[[float], Awaitable[None]], drain_s: float = 30.0,
                    ) -> LoopReport:
    """Call ``fire(due)`` as a task at each due time from ``start`` to ``end``
    (monotonic clock, which every process on the machine shares); then wait up
    to ``drain_s`` for the last ones."""
    report = LoopReport()
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while (due := start + i / rate) < end:
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
            now = time.monotonic()
        # Everything due by now leaves now: a late loop catches up at once.
        while due <= now and due < end:
            if due >= measure_from:
                report.lags_ms.append((now - due) * 1000)
            task = asyncio.create_task(fire(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            due = start + i / rate
        report.max_in_flight = max(report.max_in_flight, len(tasks))
    report.due = i
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=drain_s)
        report.unfinished = len(pending)
        for task in pending:
            task.cancel()
    return report


def pct(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
