"""Helpers for the runner tests: fast settings, a worker on a background loop, waits."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.runner.worker import Worker
from app.settings import Settings
from app.store import Store
from app.store.inputs import TERMINAL, JobSubmit
from app.store.jobs import Limits

# Short beats so recovery and cancels happen within a second or two.
FAST = Settings(worker_heartbeat_s=0.1, worker_lease_s=1.0, worker_poll_s=0.02,
                worker_kill_grace_s=0.5, worker_drain_s=0.0, worker_concurrency=4)
FAST_ENV = {"RUNYARD_WORKER_HEARTBEAT_S": "0.1", "RUNYARD_WORKER_LEASE_S": "1",
            "RUNYARD_WORKER_POLL_S": "0.02", "RUNYARD_WORKER_KILL_GRACE_S": "0.5",
            "RUNYARD_WORKER_DRAIN_S": "0"}


def submit(store: Store, command: dict[str, Any] | str, **fields: Any) -> str:
    """Queue a job (a shell string or a command object); its execution id."""
    if isinstance(command, str):
        command = {"shell": command}
    answer, _ = store.submit_job(JobSubmit.model_validate({"command": command, **fields}),
                                 Limits())
    return str(answer["execution_id"])


def wait_status(store: Store, execution_id: str, statuses: frozenset[str] | set[str] = TERMINAL,
                timeout: float = 30) -> dict[str, Any]:
    """Poll until the execution reaches one of ``statuses``; the execution."""
    deadline = time.monotonic() + timeout
    while True:
        execution, _ = store.get_execution(execution_id)
        if execution["status"] in statuses:
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(f"{execution_id} still {execution['status']} after {timeout}s")
        time.sleep(0.02)


def all_events(store: Store, execution_id: str, **page: Any) -> list[dict[str, Any]]:
    """Every event of a run (paged through), in seq order."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        rows, next_after = store.events(execution_id, after_seq=after, limit=1000, **page)
        out.extend(rows)
        if next_after is None:
            return out
        after = next_after


def output(store: Store, execution_id: str, stream: str = "stdout") -> list[str]:
    """The messages of a run's ``stream`` events, in order."""
    return [e["message"] for e in all_events(store, execution_id, types=(stream,))]


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie nobody reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")


def wait_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class BackgroundWorker:
    """A :class:`Worker` running on its own event loop in a thread."""

    def __init__(self, store: Store, settings: Settings = FAST) -> None:
        self.store, self.settings = store, settings
        self.worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.worker = Worker(self.store, self.settings)
        self._ready.set()
        try:
            await self.worker.run(self._stopping)
        except BaseException as exc:   # surfaced by stop()
            self.error = exc
            raise

    def start(self) -> BackgroundWorker:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def call(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the worker's loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        assert self._loop is not None and self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def worker_running(store: Store, **settings: Any) -> Iterator[BackgroundWorker]:
    """A background worker over ``store`` for the duration of the block."""
    worker = BackgroundWorker(store, FAST.with_(**settings)).start()
    try:
        yield worker
    finally:
        worker.stop()
