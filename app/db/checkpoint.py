"""Checkpoints of a SQLite write-ahead log, run by a thread of their own.

Left to itself, SQLite checkpoints inside the commit that takes the WAL past
``wal_autocheckpoint`` pages: that one writer then copies tens of MB of pages
into the database file and waits for them to reach the disk while every other
write queues behind it. Here a thread runs a ``PASSIVE`` checkpoint shortly
after commits, on a connection of its own. ``PASSIVE`` never waits for readers
or writers, and SQLite does the copying and syncing with the GIL released, so
it overlaps with the next writes on another core: a bulk load of a million
runs went 7-16% faster (``docs/PERFORMANCE.md``). The writers' own
``wal_autocheckpoint`` stays, set higher, for when this thread falls behind.

No library does this for us: SQLAlchemy has no notion of checkpoints, and the
standard ``sqlite3`` module exposes no WAL hook, so the thread is woken by the
write engine's ``commit`` event.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

# Commits arriving within this delay share one checkpoint: often enough to keep
# the WAL small during a bulk load (~10-20 MB), rare enough that a busy server
# does not rewrite the same hot pages into the file after every commit.
DELAY_S = 0.2


class Checkpointer:
    """A daemon thread that checkpoints ``path``'s WAL after commits (``notify``)."""

    def __init__(self, path: str, delay_s: float = DELAY_S) -> None:
        self._path = path
        self._delay_s = delay_s
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint",
                                        daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A write transaction committed: checkpoint soon."""
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after one last checkpoint."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        stop = threading.Event()  # only ever waited on, for the delay
        while True:
            self._wake.wait()
            if not self._closed:
                stop.wait(self._delay_s)
            self._wake.clear()
            try:
                if conn is None:
                    conn = sqlite3.connect(self._path, isolation_level=None,
                                           check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                # A full disk or a read-only file: the writes themselves answer
                # 503 for it; the writers' autocheckpoint remains.
                log.debug("checkpoint of %s failed: %s", self._path, exc)
                if conn is not None:
                    conn.close()
                    conn = None
            if self._closed:
                break
        if conn is not None:
            conn.close()
