"""A worker's leases: renewing them (and hearing of cancels), and taking over lost ones.

Renewal is one query per heartbeat for all the jobs a worker holds; its answer
says, for each, whether a cancel was requested or the run was ended by some
other write: that is how a cancel reaches the worker holding the job, in
whatever process it is. A job missing from the answer was taken over: the
worker stops it without writing anything more.

A lost worker's job is taken over (its lease moved to the recovering worker)
before what its attempt left running on this host is killed, and only then
queued again or failed: never two attempts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from app.runner.procs import is_running, kill_orphans, owner_pid
from app.store import Store
from app.store.inputs import TERMINAL
from app.store.leases import Claimed

log = logging.getLogger("runyard.runner")


@dataclass(eq=False)
class Running:
    """A job a worker is running, and how to stop it."""

    job: Claimed
    stop: asyncio.Future[str]
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def halt(self, reason: str) -> None:
        """Stop the command (``cancel``, ``lost``, ``ended``, ``shutdown``)."""
        if not self.stop.done():
            self.stop.set_result(reason)


async def keep_leases(store: Store, owner: str, running: dict[str, Running], lease_s: float,
                      heartbeat_s: float, done: asyncio.Event) -> None:
    """Renew every lease in ``running`` each heartbeat until ``done`` is set."""
    lease_ms = int(lease_s * 1000)
    last_ok = time.monotonic()
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(heartbeat_s):
                await done.wait()
        ids = list(running)
        if not ids:
            last_ok = time.monotonic()
            continue
        began = time.monotonic()
        try:
            held = await asyncio.to_thread(store.renew_leases, owner, ids, lease_ms)
        except Exception:
            log.exception("renewing leases failed")
            if time.monotonic() - last_ok > lease_s * 0.75:
                # Another worker may take these jobs over soon: stop them first.
                for job in list(running.values()):
                    job.halt("lost")
            continue
        last_ok = began
        for execution_id in ids:
            job = running.get(execution_id)
            if job is None:
                continue
            if execution_id not in held:
                job.halt("lost")
            elif held[execution_id][0]:
                job.halt("cancel")
            elif held[execution_id][1] in TERMINAL:
                job.halt("ended")


async def recover(store: Store, owner: str, host: str, lease_ms: int,
                  startup: bool = False) -> int:
    """Take over jobs of lost workers: at start, those of dead workers on this host
    at once; always, those whose lease expired. Returns how many were queued again."""
    queued = 0
    try:
        if startup:
            for row in await asyncio.to_thread(store.leases_held_by, host + "/"):
                pid = owner_pid(row["lease_owner"], host)
                if row["lease_owner"] != owner and pid and not is_running(pid):
                    queued += await _take_over(store, owner, host, lease_ms, row, False)
        for row in await asyncio.to_thread(store.expired_leases):
            if row["lease_owner"] != owner:   # our own: the keeper's business
                queued += await _take_over(store, owner, host, lease_ms, row, True)
    except Exception:
        log.exception("recovering jobs of lost workers failed")
    return queued


async def _take_over(store: Store, owner: str, host: str, lease_ms: int, row: dict[str, Any],
                     only_if_expired: bool) -> int:
    execution_id, lost = row["execution_id"], row["lease_owner"]
    before = await asyncio.to_thread(store.take_over_job, execution_id, lost, owner, lease_ms,
                                     only_if_expired)
    if before is None:
        return 0
    if owner_pid(lost, host) is not None:
        kill_orphans(before["pid"], before["pid_start"])
    status = await asyncio.to_thread(store.recover_job, execution_id, owner, lost)
    log.warning("job %s: worker %s was lost; now %s", execution_id, lost, status)
    return 1 if status == "queued" else 0
