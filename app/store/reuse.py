"""The page's aggregates of one view, reused for a moment while writes pour in.

The page's total, facets, chart and slow threshold each count every run of
its range (24 h by default). On SQLite that is seven passes over an index per
page: about 40 ms of CPU at 60,000 runs in the range (``bench/page_cpu.py``),
so 20 page loads a second cost half a core there. In the soak
(``bench/soak.py``) the database grows by ~90 runs a second, the pages' cost
grew with it, and late in the run writes were refused for want of CPU
(docs/PERFORMANCE.md, "Soak").

While this process commits more than ``BUSY_WRITES_PER_S`` writes a second,
those counts change faster than anyone can read them, so a view's aggregates
computed in the last ``ttl_s`` are served again instead of counted anew.
Below that rate every load counts afresh, and only aggregates computed while
busy are kept, so a run written by hand shows in the very next load's counts.
The view is the filter with its time bounds rounded down to ``ttl_s``: a
"last 24 h" view moves with the clock and would otherwise never match.

A cache of our own rather than a library's: what to keep is decided by the
write rate, and entries live for seconds, so a dict, a lock and a size bound
are all it takes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import TypeVar

from app.store.filters import ExecutionFilter

T = TypeVar("T")

# Writes a second (this process's) above which aggregates are reused.
BUSY_WRITES_PER_S = 50
# Views kept at most; past it the expired go, then all if need be.
MAX_VIEWS = 256


class Reuse:
    """Recent aggregates per view, and the write rate that decides their use."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._second = 0            # the whole second of the clock now counting
        self._writes = 0            # writes committed in it so far
        self._writes_before = 0     # writes committed in the second before it
        self._kept: dict[Hashable, tuple[float, object]] = {}

    def wrote(self, requests: int = 1) -> None:
        """Count a committed write of ``requests`` requests (grouped ones count
        each: a group commit is as many writes to the page's counts); nothing
        to count when reuse is off."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._roll()
            self._writes += requests

    def busy(self) -> bool:
        """True while this process commits more than ``BUSY_WRITES_PER_S`` writes a second
        (in the last whole second, or already in this one)."""
        with self._lock:
            self._roll()
            return max(self._writes, self._writes_before) > BUSY_WRITES_PER_S

    def _roll(self) -> None:
        now = int(self._clock())
        if now != self._second:
            self._writes_before = self._writes if now == self._second + 1 else 0
            self._writes, self._second = 0, now

    def get(self, kind: str, flt: ExecutionFilter, compute: Callable[[], T]) -> T:
        """``compute()``'s value for this view, or the one computed within
        ``ttl_s`` while busy. The value is shared: callers must not change it."""
        if self.ttl_s <= 0 or not self.busy():
            return compute()
        key = (kind, self._view(flt))
        started = self._clock()
        kept = self._kept.get(key)
        if kept is not None and started - kept[0] <= self.ttl_s:
            return kept[1]  # type: ignore[return-value]
        value = compute()
        with self._lock:
            if len(self._kept) >= MAX_VIEWS:
                self._kept = {k: v for k, v in self._kept.items()
                              if started - v[0] <= self.ttl_s}
                if len(self._kept) >= MAX_VIEWS:
                    self._kept.clear()
            # Its age counts from before the reads began: never younger than it is.
            self._kept[key] = (started, value)
        return value

    def _view(self, flt: ExecutionFilter) -> ExecutionFilter:
        step = max(1, int(self.ttl_s * 1000))
        return replace(flt, from_ms=None if flt.from_ms is None else flt.from_ms // step * step,
                       to_ms=None if flt.to_ms is None else flt.to_ms // step * step)
