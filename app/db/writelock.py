"""Turns at a SQLite file's write lock between processes, handed over at once.

SQLite lets one connection write at a time. A process that asks for the write
lock while another holds it gets SQLITE_BUSY, and its busy handler sleeps 1,
2, 5, 10 and on up to 100 ms between tries, with no queue: the process that
just committed takes the lock again at once while the other sleeps. With two
server processes writing steadily (``serve --workers 2`` in the soak) that
starved one of them: writes waited seconds and were refused (503 overloaded;
docs/PERFORMANCE.md, Soak, ninth session).

So each write transaction on a SQLite file first takes an exclusive
``flock(2)`` on a file beside it, blocking in the kernel, which wakes a waiter
the moment the holder lets go. Python's sqlite3 cannot install a busy handler
of its own, and no library offers this lock; ``flock`` is the kernel's own
queue, released when a process dies, so a crash never leaves it held. The
busy timeout stays, for any other program writing the file.

Why a file of its own (``<database>-lock``): SQLite locks the database with
POSIX ``fcntl`` locks, and closing *any* descriptor of the database file drops
every such lock the process holds. One descriptor per process, opened on first
use; the flock is per open file, so the threads of one process share it, as
they already take turns at the process's single write connection. Where the
file cannot be created (a read-only folder) writes go on without it, with one
warning: the lock only makes waiting fairer, it guards nothing SQLite does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)


class WriterLock:
    """An exclusive ``flock`` on ``<database_path>-lock``, held around each write."""

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}-lock"
        self._fd: int | None = None
        self._unavailable = False
        self._opening = threading.Lock()

    def _descriptor(self) -> int | None:
        if self._fd is not None or self._unavailable:
            return self._fd
        with self._opening:
            if self._fd is None and not self._unavailable:
                try:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError as exc:
                    self._unavailable = True
                    log.warning("cannot open %s (%s): processes writing this database "
                                "will take turns by SQLite's busy timeout alone",
                                self.path, exc.strerror)
        return self._fd

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the body (waiting for another process to let go)."""
        fd = self._descriptor()
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the descriptor (releasing the lock if held)."""
        with self._opening:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
