"""The page's aggregates are reused only while writes pour in (app/store/reuse.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from app.db.engine import open_database
from app.store import Store
from app.store.filters import ExecutionFilter
from app.store.inputs import ExecutionCreate
from app.store.reuse import BUSY_WRITES_PER_S, Reuse
from app.times import now_ms

DAY_MS = 86_400_000


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counter() -> Callable[[], int]:
    """A computation that returns how many times it has run."""
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)
    return compute


def test_idle_every_call_computes_and_nothing_is_kept() -> None:
    clock = Clock()
    reuse = Reuse(2.0, clock)
    compute = _counter()
    for _ in range(BUSY_WRITES_PER_S):   # at the threshold, not above it
        reuse.wrote()
    assert not reuse.busy()
    assert [reuse.get("page", ExecutionFilter(), compute) for _ in range(3)] == [1, 2, 3]
    # What was counted while idle is not served once busy: only busy counts are kept.
    reuse.wrote()
    assert reuse.busy()
    assert reuse.get("page", ExecutionFilter(), compute) == 4


def test_a_group_commit_counts_each_of_its_requests() -> None:
    reuse = Reuse(2.0, Clock())
    reuse.wrote(BUSY_WRITES_PER_S)
    assert not reuse.busy()
    reuse.wrote(1)
    assert reuse.busy()


def test_busy_a_view_is_counted_once_per_ttl() -> None:
    clock = Clock()
    reuse = Reuse(2.0, clock)
    compute = _counter()
    reuse.wrote(BUSY_WRITES_PER_S + 1)
    assert reuse.get("page", ExecutionFilter(), compute) == 1
    clock.now += 0.9      # the next second: the last whole one was busy
    assert reuse.busy()
    assert reuse.get("page", ExecutionFilter(), compute) == 1
    # Another kind or another filter is another view.
    assert reuse.get("count", ExecutionFilter(), compute) == 2
    assert reuse.get("page", ExecutionFilter(status=("failed",)), compute) == 3
    clock.now += 1.2      # 2.1 s after the first count, and busy again
    reuse.wrote(BUSY_WRITES_PER_S + 1)
    assert reuse.get("page", ExecutionFilter(), compute) == 4


def test_busy_ends_a_second_after_the_writes_stop() -> None:
    clock = Clock()
    reuse = Reuse(2.0, clock)
    reuse.wrote(BUSY_WRITES_PER_S + 1)
    clock.now += 1.0
    assert reuse.busy()    # the second before was busy
    clock.now += 1.0
    assert not reuse.busy()


def test_a_moving_range_is_one_view_within_the_ttl() -> None:
    clock = Clock()
    reuse = Reuse(2.0, clock)
    compute = _counter()
    reuse.wrote(BUSY_WRITES_PER_S + 1)
    now = 1_800_000_000_000    # on the 2 s grid
    assert reuse.get("page", ExecutionFilter(from_ms=now - DAY_MS), compute) == 1
    # "Last 24 h" 1.5 s later: the same view.
    assert reuse.get("page", ExecutionFilter(from_ms=now - DAY_MS + 1500), compute) == 1
    assert reuse.get("page", ExecutionFilter(from_ms=now - DAY_MS + 2000), compute) == 2


def test_off_at_zero() -> None:
    reuse = Reuse(0.0, Clock())
    compute = _counter()
    for _ in range(10 * BUSY_WRITES_PER_S):
        reuse.wrote()
    assert [reuse.get("page", ExecutionFilter(), compute) for _ in range(2)] == [1, 2]


def test_views_kept_are_bounded() -> None:
    clock = Clock()
    reuse = Reuse(2.0, clock)
    reuse.wrote(BUSY_WRITES_PER_S + 1)
    for i in range(1000):
        reuse.get("page", ExecutionFilter(min_duration_ms=i), lambda: 0)
    assert len(reuse._kept) <= 256


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A store whose reuse clock stands still: its writes all fall in one second."""
    db = open_database(database_url)
    store = Store(db, reuse_s=60.0)
    store._reuse = Reuse(60.0, Clock())
    yield store
    db.dispose()


def test_the_page_counts_are_exact_until_writes_pour_in(store: Store) -> None:
    flt = ExecutionFilter(from_ms=now_ms() - DAY_MS)
    store.create_execution(ExecutionCreate(name="by hand"))
    assert store.page_meta(flt)["total"] == 1
    store.create_execution(ExecutionCreate(name="by hand"))
    # Idle: the next load counts the run just written.
    assert store.page_meta(flt)["total"] == 2
    assert store.count_runs(flt) == 2
    for _ in range(BUSY_WRITES_PER_S - 1):
        store.create_execution(ExecutionCreate(name="poured"))
    assert store._reuse.busy()
    total = 2 + BUSY_WRITES_PER_S - 1
    first = store.page_meta(flt)
    assert first["total"] == total
    assert {f["value"]: f["count"] for f in first["facets"]["status"]}["running"] == total
    store.create_execution(ExecutionCreate(name="one more"))
    # Busy: the same view is served from the last count, facets and all.
    again = store.page_meta(flt)
    assert again is first
    # The list's count is a view of its own, counted now and then kept.
    assert store.count_runs(flt) == total + 1
    store.create_execution(ExecutionCreate(name="and another"))
    assert store.count_runs(flt) == total + 1
    # Another filter is another view, counted afresh.
    assert store.page_meta(ExecutionFilter(from_ms=flt.from_ms, status=("running",))
                           )["total"] == total + 2
