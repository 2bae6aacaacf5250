"""Hosting a worker: inside ``runyard serve`` (the app lifespan), or as ``runyard worker``.

In the server, the worker shares the app's store, so its writes reach the
live page through the in-process notifier at once; a submission or approval
wakes it directly (no poll delay), and a cancel of a job it runs stops the
process at once instead of at the next lease renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from app.runner.retention import prune_forever
from app.runner.worker import Worker
from app.settings import Settings
from app.store import Store

log = logging.getLogger("runyard.runner")


class Pool:
    """The in-process workers of ``runyard serve --allow-exec``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.worker = Worker(store, settings)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin claiming jobs."""
        self._task = asyncio.create_task(self.worker.run(self._stopping),
                                         name="runyard-worker-pool")

    async def stop(self) -> None:
        """Stop claiming; running jobs get ``worker_drain_s`` to finish, then stop."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """A job was queued or approved here."""
        self.worker.wake()

    def cancel(self, execution_id: str) -> bool:
        """Stop a job this process runs now (the lease renewal would, a beat later)."""
        return self.worker.halt(execution_id, "cancel")


async def _work(settings: Settings) -> None:
    from app.db.engine import open_database

    db = open_database(settings.database_url, settings.read_pool_size)
    store = Store(db)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    worker = Worker(store, settings)
    chores = []
    if settings.retention_days > 0:
        chores.append(asyncio.create_task(prune_forever(store, settings.retention_days,
                                                        stopping)))
    log.warning("worker %s: running up to %d jobs at a time", worker.owner,
                worker.concurrency)
    try:
        await worker.run(stopping)
    finally:
        stopping.set()
        await asyncio.gather(*chores, return_exceptions=True)
        db.dispose()


def worker_main(settings: Settings) -> int:
    """``runyard worker``: claim and run jobs until SIGTERM or SIGINT."""
    asyncio.run(_work(settings))
    return 0
