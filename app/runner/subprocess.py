"""Running one command: its own process group, both pipes drained, always reaped.

The command starts in a new session (``start_new_session=True``), so it leads
a process group that holds everything it spawns. Stopping it (timeout, cancel,
shutdown) sends SIGTERM to the whole group, then SIGKILL after a grace
period. When the command exits by itself, whatever it left running in its
group is killed too: a job's processes do not outlive it.

Output arrives through a ``SubprocessProtocol`` rather than ``StreamReader``:
``pipe_data_received`` hands over chunks from both pipes as they come (so
neither pipe can fill up and block the command) and there is no readline
limit to trip over. asyncio reaps the process in every case; closing the
transport in ``finally`` makes sure nothing is left open even on cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from subprocess import DEVNULL, PIPE
from typing import Any

from app.runner.lines import LineSplitter
from app.runner.output import OutputBuffer
from app.runner.procs import kill_group, start_ticks
from app.store.leases import Ending
from app.times import now_ms

# After the command exits, how long a child it left behind may keep the pipes open.
LEFTOVER_GRACE_S = 0.5
# After SIGKILL, how long to wait for the pipes to close (a process in another
# session that holds them is not ours to wait for).
PIPES_AFTER_KILL_S = 2.0
_STREAMS = {1: "stdout", 2: "stderr"}


@dataclass(frozen=True)
class ProcessSpec:
    """What to run, and where."""

    argv: list[str]
    cwd: str | None
    env: dict[str, str]


@dataclass(frozen=True)
class Finished:
    """How the process ended: ``exited`` with ``returncode``, or stopped for
    ``reason`` (``timeout`` or whatever the stop future said), or never
    started (``spawn_error``)."""

    reason: str
    returncode: int | None = None
    spawn_error: str | None = None


class _Pipes(asyncio.SubprocessProtocol):
    def __init__(self, sink: OutputBuffer, loop: asyncio.AbstractEventLoop) -> None:
        self.sink = sink
        self.splitters = {1: LineSplitter(), 2: LineSplitter()}
        self.open_pipes = {1, 2}
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        # asyncio's or uvloop's (uvicorn picks uvloop when it is installed): the
        # latter is not an asyncio.SubprocessTransport subclass, but has its methods.
        self.transport: Any = None
        self.paused = False
        sink.on_space.append(self._resume)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        pieces = self.splitters[fd].feed(bytes(data))
        if pieces:
            self.sink.add(_STREAMS[fd], pieces, now_ms())
        if not self.paused and self.sink.full():
            self._set_reading(False)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd not in self.open_pipes:
            return
        pieces = self.splitters[fd].finish()
        if pieces:
            self.sink.add(_STREAMS[fd], pieces, now_ms())
        self.open_pipes.discard(fd)
        if not self.open_pipes and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _resume(self) -> None:
        if self.paused:
            self._set_reading(True)

    def _set_reading(self, on: bool) -> None:
        if self.transport is None:
            return
        self.paused = not on
        for fd in self.open_pipes:
            pipe: Any = self.transport.get_pipe_transport(fd)
            if pipe is not None:
                with contextlib.suppress(RuntimeError, AttributeError):
                    if on:
                        pipe.resume_reading()
                    else:
                        pipe.pause_reading()


async def _within(aw: asyncio.Future[Any], seconds: float) -> bool:
    """Wait for ``aw`` (without cancelling it) at most ``seconds``; True if done."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await asyncio.shield(aw)
    return aw.done()


async def _drained(pipes: _Pipes, seconds: float) -> bool:
    """Wait for both pipes to reach end of file, at most ``seconds`` of reading
    time: while reading is paused for the writer to catch up, the clock stops
    (closing the pipes then would lose what the command already wrote)."""
    while not await _within(pipes.drained, seconds):
        if not pipes.paused:
            return False
    return True


async def run_process(spec: ProcessSpec, sink: OutputBuffer, stop: asyncio.Future[str], *,
                      timeout_s: float, kill_grace_s: float, started: str = "") -> Finished:
    """Run ``spec`` to its end, feeding its output to ``sink``.

    ``stop`` is resolved with a reason (``cancel``, ``lost``, ``shutdown``…) to
    stop the command early; ``timeout_s`` stops it with reason ``timeout``.
    """
    loop = asyncio.get_running_loop()
    spawned_at = now_ms()
    try:
        transport, pipes = await loop.subprocess_exec(
            lambda: _Pipes(sink, loop), *spec.argv, stdin=DEVNULL, stdout=PIPE, stderr=PIPE,
            cwd=spec.cwd, env=spec.env, start_new_session=True)
    except OSError as exc:
        return Finished("spawn_error", spawn_error=f"could not start {spec.argv[0]!r}: "
                        f"{exc.strerror or exc}")
    pid = transport.get_pid()
    try:
        sink.started(pid, start_ticks(pid), f"{started} pid {pid}".strip(), spawned_at)
        done, _ = await asyncio.wait({pipes.exited, stop}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if pipes.exited in done:
            reason = "exited"
            if not await _drained(pipes, LEFTOVER_GRACE_S):
                await _stop_group(pid, pipes, kill_grace_s)
        else:
            reason = stop.result() if stop in done else "timeout"
            await _stop_group(pid, pipes, kill_grace_s)
        # Whatever is left in the group (it closed its pipes, or ignored SIGTERM).
        kill_group(pid, signal.SIGKILL)
        await _within(pipes.exited, PIPES_AFTER_KILL_S)
        await _drained(pipes, PIPES_AFTER_KILL_S)
        return Finished(reason, transport.get_returncode())
    finally:
        if transport.get_returncode() is None:
            kill_group(pid, signal.SIGKILL)
        transport.close()


async def _stop_group(pid: int, pipes: _Pipes, grace_s: float) -> None:
    """SIGTERM the group; SIGKILL it if it has not exited and let go of the pipes
    within ``grace_s``."""
    if not kill_group(pid, signal.SIGTERM):
        return
    both = asyncio.gather(asyncio.shield(pipes.exited), asyncio.shield(pipes.drained))
    if not await _within(both, grace_s):
        kill_group(pid, signal.SIGKILL)
    if not both.done():
        both.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await both


def ending(finished: Finished, stderr_tail: str, timeout: float) -> Ending:
    """How the execution records the way its process ended (``stderr_tail``: the
    last lines of its stderr, the error of a failed run)."""
    if finished.spawn_error is not None:
        return Ending("failed", None, finished.spawn_error)
    if finished.reason == "timeout":
        return Ending("timed_out", None, f"timed out after {timeout:g}s")
    if finished.reason in ("cancel", "ended"):
        return Ending("cancelled", None, "cancelled")
    rc = finished.returncode
    if rc == 0:
        return Ending("completed", 0)
    tail = stderr_tail
    if rc is None:
        return Ending("failed", None, tail or "the process ended without an exit status")
    if rc < 0:
        # Shells report death by signal N as 128 + N; so does `runyard run --follow`.
        name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        return Ending("failed", 128 - rc, f"killed by signal {name}" + (f"\n{tail}" if tail
                                                                          else ""))
    return Ending("failed", rc, tail or f"exited with code {rc}")
