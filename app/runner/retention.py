"""Retention: ``RUNYARD_RETENTION_DAYS`` old finished runs are pruned, a little at a time.

Each step is one short transaction (see ``app.store.retention``); between
steps the loop yields for a moment so other writers get the database. Every
process that runs this (servers, workers) may prune; deleting what another
already deleted is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.store import Store
from app.times import now_ms

log = logging.getLogger("runyard.retention")

DAY_MS = 86_400_000
EVERY_S = 3600.0
PAUSE_S = 0.05


async def prune_once(store: Store, days: float, stopping: asyncio.Event | None = None,
                     pause_s: float = PAUSE_S) -> int:
    """Prune everything older than ``days`` (until ``stopping``); how many
    executions went."""
    cutoff = now_ms() - int(days * DAY_MS)
    pruned = 0
    while stopping is None or not stopping.is_set():
        step = await asyncio.to_thread(store.prune_step, cutoff)
        pruned += step.executions
        if step.done:
            break
        await asyncio.sleep(pause_s)
    return pruned


async def prune_forever(store: Store, days: float, stopping: asyncio.Event,
                        every_s: float = EVERY_S) -> None:
    """Prune now, then every ``every_s`` seconds, until ``stopping`` is set.
    Stop it by setting ``stopping`` and awaiting it, not by cancelling: a step
    runs in a thread that a cancel would leave holding a connection."""
    while not stopping.is_set():
        try:
            pruned = await prune_once(store, days, stopping)
            if pruned:
                log.info("retention: deleted %d executions older than %g days", pruned, days)
        except Exception:
            log.exception("retention failed; trying again later")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every_s):
                await stopping.wait()
