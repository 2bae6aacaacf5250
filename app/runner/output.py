"""A job's output waiting to be written: batching, the output cap, progress.

Lines become ``stdout`` / ``stderr`` events (level ``info``: many programs log
to stderr as a matter of course, so stderr is not an error by itself). A batch
is due at 100 lines, 64 KB or 100 ms after its first line, whichever comes
first; the writer takes everything buffered at that moment, so when the
database is slower than the command, batches grow instead of falling behind.
Past ``full()`` the reader pauses its pipes (the command then blocks on write)
until the writer catches up: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

from app.runner.lines import Piece, Progress, decode, parse_progress
from app.store.feed import EventRow
from app.store.leases import Output
from app.times import now_ms

FLUSH_LINES = 100
FLUSH_BYTES = 64 * 1024
FLUSH_DELAY_S = 0.1
# Backpressure: stop reading pipes while this much waits for the database.
FULL_LINES = 50_000
FULL_BYTES = 16 * 1024 * 1024
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 500


class OutputBuffer:
    """Events of one job not yet written, and what its ending needs to know."""

    def __init__(self, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes
        self.kept_bytes = 0
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._events: list[EventRow] = []
        self._tail_open = False
        self._bytes = 0
        self._progress: tuple[float | None, str | None] | None = None
        self._progress_dirty = False
        self._process: tuple[int, int | None] | None = None
        self._open = {"stdout": False, "stderr": False}   # a line is mid-way
        self._first_at: float | None = None
        self._due = asyncio.Event()        # a batch is full
        self._arrived = asyncio.Event()    # the first line of a batch came: start its clock
        self.closed = False
        self.discarding = False
        self.on_space: list[Callable[[], None]] = []

    # -- the reader's side -----------------------------------------------------
    def note(self, message: str, level: str = "info", data: Any = None) -> None:
        """A line of the runner's own (``log``), outside the cap."""
        self._events.append(("log", message, level, data, now_ms()))
        self._grew(0)

    def started(self, pid: int, ticks: int | None, message: str, ts: int) -> None:
        """The process started: record its group (written with the next batch).
        Output can arrive before the spawn call returns: this goes first."""
        self._process = (pid, ticks)
        self._events.insert(0, ("log", message, "info", {"pid": pid}, ts))
        self._grew(0)

    def add(self, stream: str, pieces: list[Piece], ts: int) -> None:
        """Pieces of ``stream`` read at ``ts``, in order."""
        if self.discarding:
            return
        if not self._add_plain(stream, pieces, ts):
            for raw, continues in pieces:
                self._add_piece(stream, raw, continues, ts)
        if stream == "stderr":
            self._keep_tail(pieces)

    def _add_plain(self, stream: str, pieces: list[Piece], ts: int) -> bool:
        """The common case in one go: whole, short, valid UTF-8 lines with no NUL,
        no progress line, under the cap. Decoding and splitting a whole chunk
        is several times faster than line by line; False when it does not apply."""
        if self._open[stream] or any(c for _, c in pieces):
            return False
        joined = b"\n".join(raw for raw, _ in pieces)
        size = len(joined) - len(pieces) + 1
        if (self.kept_bytes + size > self.cap_bytes or b"\x00" in joined
                or joined.startswith(b"::") or b"\n::" in joined):
            return False
        try:
            text = joined.decode("utf-8")
        except UnicodeDecodeError:
            return False
        self.kept_bytes += size
        self._events.extend([(stream, line, "info", None, ts) for line in text.split("\n")])
        self._grew(size)
        return True

    def _add_piece(self, stream: str, raw: bytes, continues: bool, ts: int) -> None:
        whole = not self._open[stream] and not continues
        self._open[stream] = continues
        if whole and raw[:2] == b"::":
            progress = parse_progress(raw)
            if progress is not None:
                self._add_progress(progress, len(raw), ts)
                return
        size = len(raw)
        if self.kept_bytes + size > self.cap_bytes:
            self._drop(size, continues)
            return
        self.kept_bytes += size
        data = {"partial": True} if continues else None
        for text in decode(raw):
            self._events.append((stream, text, "info", data, ts))
        self._grew(size)

    def _keep_tail(self, pieces: list[Piece]) -> None:
        # The start of each of the last lines (a long line's first piece), for the
        # error of a failed run; kept past the cap too.
        starts, was_open = [], self._tail_open
        for raw, continues in pieces:
            if not was_open:
                starts.append(raw)
            was_open = continues
        self._tail_open = was_open
        for raw in starts[-STDERR_TAIL_LINES:]:
            self.stderr_tail.append(decode(raw[:STDERR_TAIL_CHARS * 4])[0][:STDERR_TAIL_CHARS])

    def _add_progress(self, p: Progress, size: int, ts: int) -> None:
        last = self._progress or (None, None)
        pct = p.pct if p.pct is not None else last[0]
        stage = p.stage if p.stage is not None else last[1]
        self._progress, self._progress_dirty = (pct, stage), True
        if self.kept_bytes + size > self.cap_bytes:
            # Past the cap the row still moves (once per batch); no event is kept.
            self._drop(size, False)
            self._grew(0)
            return
        self.kept_bytes += size
        self._events.append((
            "execution.progress", p.message or stage, "info",
            {"pct": pct, "stage": stage, "message": p.message or None}, ts))
        self._grew(size)

    def _drop(self, size: int, continues: bool) -> None:
        if not self.dropped_bytes:
            self.note(f"output passed the cap of {self.cap_bytes} bytes: the rest is "
                      "read but not kept")
        self.dropped_bytes += size
        self.dropped_lines += 0 if continues else 1

    def _grew(self, size: int) -> None:
        self._bytes += size
        if self._first_at is None:
            self._first_at = time.monotonic()
            self._arrived.set()
        if len(self._events) >= FLUSH_LINES or self._bytes >= FLUSH_BYTES:
            self._due.set()

    def full(self) -> bool:
        """True when the reader should pause until the writer catches up."""
        return len(self._events) >= FULL_LINES or self._bytes >= FULL_BYTES

    # -- the writer's side -----------------------------------------------------
    async def wait_due(self) -> None:
        """Return when a batch is due or the buffer is closed."""
        while not self.closed:
            if self._due.is_set():
                return
            if self._first_at is None:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            left = self._first_at + FLUSH_DELAY_S - time.monotonic()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    await self._due.wait()
            except TimeoutError:
                return

    def take(self) -> Output:
        """Everything buffered, as one store write."""
        out = Output(self._events, self._progress if self._progress_dirty else None,
                     self._process)
        self._events, self._bytes, self._first_at = [], 0, None
        self._progress_dirty, self._process = False, None
        self._due.clear()
        for resume in self.on_space:
            resume()
        return out

    def discard(self) -> None:
        """Forget what is buffered and whatever comes next (the job was lost:
        nothing more may be written), and let the reader drain the pipes."""
        self.discarding = True
        self.take()

    def close(self) -> None:
        """No more batches: the rest goes with the job's ending."""
        self.closed = True
        self._due.set()
        self._arrived.set()

    def final(self) -> Output:
        """What is left, plus the record of dropped output."""
        if self.dropped_bytes:
            self.note(f"{self.dropped_bytes} bytes of output ({self.dropped_lines} lines) "
                      f"over the {self.cap_bytes}-byte cap were dropped", "warn",
                      {"dropped_bytes": self.dropped_bytes,
                       "dropped_lines": self.dropped_lines, "cap_bytes": self.cap_bytes})
        return self.take()

    def error_tail(self) -> str:
        """The last stderr lines, for an execution's ``error``."""
        return "\n".join(self.stderr_tail)
