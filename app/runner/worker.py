"""A worker: claims queued jobs, runs them, keeps their leases, recovers lost ones.

One asyncio task claims jobs while a slot is free; each job runs in its own
task with a writer task that flushes its output; one keeper task renews every
lease this worker holds each heartbeat and, with the same query, learns of
cancel requests (so a cancel reaches the worker holding the job, whichever
process that is). Store calls run in threads: the store is synchronous.

No job runs twice at the same time: a claim is atomic, every write is fenced
by the lease, a worker that cannot renew its leases for most of a lease period
stops its jobs itself, and a job is only taken over from a lost worker after
its lease expired (or its worker's pid is gone on this host), after killing
what the old attempt left running when it ran on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from app.db.dialect import Dialect
from app.runner.leases import Running, keep_leases, recover
from app.runner.output import OutputBuffer
from app.runner.procs import hostname, job_argv, job_env, new_owner_id
from app.runner.subprocess import Finished, ProcessSpec, ending, run_process
from app.runner.wakeup import listen_for_commits
from app.settings import Settings
from app.store import Store
from app.store.leases import LeaseLost

log = logging.getLogger("runyard.runner")


async def _first(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class Worker:
    """Claims and runs up to ``worker_concurrency`` jobs at a time."""

    def __init__(self, store: Store, settings: Settings, owner: str | None = None) -> None:
        self.store, self.settings = store, settings
        self.owner = owner or new_owner_id()
        self.host = hostname()
        self.concurrency = max(1, settings.worker_concurrency)
        self.lease_ms = int(settings.worker_lease_s * 1000)
        self.running: dict[str, Running] = {}
        self._wake = asyncio.Event()
        self._recovered_at = 0.0

    def wake(self) -> None:
        """A job may have been queued: look now rather than at the next poll."""
        self._wake.set()

    def halt(self, execution_id: str, reason: str) -> bool:
        """Stop a job this worker runs; False when it runs no such job."""
        running = self.running.get(execution_id)
        if running is not None:
            running.halt(reason)
        return running is not None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # -- the claim loop ---------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Work until ``stopping`` is set, then let running jobs finish (up to
        ``worker_drain_s``) and stop the rest."""
        done = asyncio.Event()
        keeper = asyncio.create_task(keep_leases(
            self.store, self.owner, self.running, self.settings.worker_lease_s,
            self.settings.worker_heartbeat_s, done), name="runyard-lease-keeper")
        poll_s = self.settings.worker_poll_s
        listener = None
        if self.store.dialect is Dialect.POSTGRESQL:
            listener = asyncio.create_task(listen_for_commits(self.store.db.url, self.wake))
            # Woken by NOTIFY: polling is only the backstop for a lost notification.
            poll_s = max(poll_s, 1.0)
        try:
            await self._recover(startup=True)
            while not stopping.is_set():
                self._wake.clear()
                if len(self.running) < self.concurrency and await self._claim():
                    continue
                if time.monotonic() >= self._recovered_at + self._recover_every():
                    await self._recover()
                await _first(self._wake, stopping, timeout=poll_s)
            tasks = [r.task for r in self.running.values() if r.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=self.settings.worker_drain_s)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            for running in list(self.running.values()):
                running.halt("shutdown")
            tasks = [r.task for r in self.running.values() if r.task is not None]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            # Not cancelled: a renewal in a thread would outlive the cancel, holding a
            # connection while the database is disposed.
            done.set()
            await keeper

    async def _recover(self, startup: bool = False) -> None:
        self._recovered_at = time.monotonic()
        if await recover(self.store, self.owner, self.host, self.lease_ms, startup):
            self._wake.set()

    def _recover_every(self) -> float:
        return min(5.0, self.settings.worker_lease_s / 2)

    async def _claim(self) -> bool:
        try:
            if not await self._call(self.store.has_queued_jobs):
                return False
            job = await self._call(self.store.claim_job, self.owner, self.lease_ms)
        except Exception:
            log.exception("claiming a job failed; retrying")
            await asyncio.sleep(1)
            return False
        if job is None:
            return False
        running = Running(job, asyncio.get_running_loop().create_future())
        self.running[job.execution_id] = running
        running.task = asyncio.create_task(self._run_job(running),
                                           name=f"runyard-job-{job.execution_id}")
        return True

    # -- one job ------------------------------------------------------------------
    async def _run_job(self, running: Running) -> None:
        job, s = running.job, self.settings
        sink = OutputBuffer(s.job_output_cap_bytes)
        writer = asyncio.create_task(self._write_output(running, sink))
        timeout = job.timeout_s or s.job_timeout_s
        try:
            finished = await run_process(
                ProcessSpec(job_argv(job.command), job.cwd, job_env(job.env)), sink,
                running.stop, timeout_s=timeout, kill_grace_s=s.worker_kill_grace_s,
                started=f"attempt {job.attempt} of {job.max_attempts} on {self.owner}:")
            sink.close()
            await writer
            await self._record(running, sink, finished, timeout)
        except Exception:
            log.exception("running job %s failed", job.execution_id)
        finally:
            sink.close()
            if not writer.done():
                writer.cancel()
            self.running.pop(job.execution_id, None)
            self._wake.set()

    async def _write_output(self, running: Running, sink: OutputBuffer) -> None:
        """Flush batches as they fall due, one at a time, until the job ends."""
        execution_id = running.job.execution_id
        while True:
            await sink.wait_due()
            if sink.closed:
                return
            out = sink.take()
            while True:
                try:
                    await self._call(self.store.append_job_output, execution_id,
                                     self.owner, out)
                    break
                except LeaseLost:
                    running.halt("lost")
                    sink.discard()
                    return
                except Exception:
                    log.exception("writing output of %s failed; retrying", execution_id)
                    if running.stop.done() and running.stop.result() == "lost":
                        sink.discard()
                        return
                    await asyncio.sleep(0.5)

    async def _record(self, running: Running, sink: OutputBuffer, finished: Finished,
                      timeout: float) -> None:
        job = running.job
        if finished.reason == "lost":
            log.warning("job %s: lease lost; another worker may run it", job.execution_id)
            return
        out = sink.final()
        for attempt in range(20):
            try:
                if finished.reason == "shutdown":
                    await self._call(self.store.release_job, job.execution_id, self.owner, out,
                                     "worker_stopped", "its worker stopped")
                else:
                    await self._call(self.store.finish_job, job.execution_id, self.owner, out,
                                     ending(finished, sink.error_tail(), timeout))
                return
            except Exception:
                log.exception("recording the end of %s failed (try %d)", job.execution_id,
                              attempt + 1)
                await asyncio.sleep(0.5)

