"""Processes writing one SQLite file take turns at a kernel lock (app.db.writelock)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.engine import open_database
from app.db.migrate import upgrade
from app.db.writelock import WriterLock
from app.store import Store
from app.store.errors import NotFound
from app.store.inputs import ExecutionCreate, ExecutionPatch

ROOT = Path(__file__).resolve().parent.parent
# Another process: says it is about to ask, then prints when it got the lock.
TAKER = """
import sys, time
from app.db.writelock import WriterLock
lock = WriterLock(sys.argv[1])
print("asking", flush=True)
with lock.held():
    print(time.monotonic(), flush=True)
"""


def _free(path: str) -> bool:
    """True when no process holds the lock file (tried from a descriptor of our own)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_another_process_waits_until_the_holder_lets_go(tmp_path: Path) -> None:
    database = str(tmp_path / "runyard.db")
    lock = WriterLock(database)
    with subprocess.Popen([sys.executable, "-c", TAKER, database], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True) as taker:
        assert taker.stdout is not None
        try:
            with lock.held():
                assert taker.stdout.readline() == "asking\n"
                time.sleep(0.5)
                assert taker.poll() is None, "it took the lock while this process held it"
                released = time.monotonic()
            got = float(taker.stdout.readline())
            assert taker.wait(10) == 0
        finally:
            taker.kill()
    # CLOCK_MONOTONIC is one clock for the whole machine.
    assert got >= released
    lock.close()


def test_a_folder_without_room_for_the_lock_file_leaves_writes_to_sqlite(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = WriterLock(str(tmp_path / "missing" / "runyard.db"))
    with caplog.at_level(logging.WARNING, logger="app.db.writelock"):
        for _ in range(3):
            with lock.held():
                pass
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "missing/runyard.db-lock" in warnings[0]
    assert "busy timeout alone" in warnings[0]


def test_store_writes_hold_the_lock_only_while_they_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'runyard.db'}"
    upgrade(url)
    store = Store(open_database(url))
    try:
        lock = store.db.writer_lock
        assert lock is not None
        taken, seen = lock.held, []

        @contextlib.contextmanager
        def watched() -> Iterator[None]:
            with taken():
                seen.append(_free(lock.path))
                yield

        monkeypatch.setattr(lock, "held", watched)
        store.create_execution(ExecutionCreate(name="one"))
        with pytest.raises(NotFound):
            store.update_execution("no-such-run", ExecutionPatch(name="x"))
        assert seen == [False, False], "each write held the lock while it wrote"
        assert _free(lock.path), "and let go of it after, a failed write too"
    finally:
        store.db.dispose()
