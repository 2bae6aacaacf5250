"""Faults of the storage, with real conditions: a SQLite database whose disk is
full or whose file has become read-only; then the table that maps each driver
error (SQLite and PostgreSQL) to one of the three 503 codes.

What must hold: a failing database answers 503 with a code and a message that
says what to do (never a 500, never a hang); reads and the page go on while
the database can still read; once the condition is gone, writes work again
without a restart; the SQLite file is never corrupt.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from app.factory import create_app
from app.settings import Settings
from app.store.errors import storage_failure
from tests.faults_support import (
    assert_refused,
    big_batch,
    integrity,
    local,
    otlp_body,
    reads_work,
)

# Set to test the fallbacks (PRAGMAs) where mounting would work.
NO_MOUNT = bool(os.environ.get("RUNYARD_TEST_NO_MOUNT"))


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return not NO_MOUNT and subprocess.run(mount, capture_output=True).returncode == 0


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write a file until the file system has no space left."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
                f.flush()
    return filler


def test_sqlite_disk_full(tmp_path: Path, sqlite_template: Path) -> None:
    """A real full disk: the database on a 6 MB tmpfs, then a file filling it.
    Writes (JSON, bulk, OTLP) answer 503 ``storage_full``; reads and the page
    keep working; once space is freed, writes work again without a restart.
    Where mounting is not permitted (not root), ``PRAGMA max_page_count`` on
    the write connection gives SQLite the same SQLITE_FULL error path."""
    folder = tmp_path / "small"
    mounted = _mount_tmpfs(folder, "6m")
    try:
        shutil.copy(sqlite_template, folder / "runyard.db")
        app = create_app(Settings(database_url=f"sqlite:///{folder / 'runyard.db'}"))
        with local(app) as client:
            assert client.post("/api/executions", json={"name": "before"}).status_code == 201
            if mounted:
                filler = _fill(folder)
            else:
                with app.state.store.db.write_engine.connect() as conn:
                    pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
                    conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
                    conn.commit()
            assert_refused(client.post("/api/ingest", json=big_batch("full")),
                            "storage_full", "disk is full", "free space")
            assert_refused(client.post("/api/executions",
                                        json={"name": "big", "code": "z" * 900_000}),
                            "storage_full", "nothing was written")
            otlp = client.post("/v1/traces", json=otlp_body())
            assert otlp.status_code == 503 and otlp.json()["code"] == 14, otlp.text
            assert "disk is full" in otlp.json()["message"] and "Retry-After" in otlp.headers
            reads_work(client, "before")
            assert client.get("/api/executions/full-0").status_code == 404
            if mounted:
                filler.unlink()
            else:
                with app.state.store.db.write_engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA max_page_count = 1073741823")
                    conn.commit()
            assert client.post("/api/ingest", json=big_batch("after", 5)).status_code == 200
            assert client.post("/api/executions", json={"name": "after"}).status_code == 201
        integrity(f"sqlite:///{folder / 'runyard.db'}")
    finally:
        if mounted:
            _unmount(folder)


@contextlib.contextmanager
def _ext4(where: Path) -> Iterator[bool]:
    """A small loop-mounted ext4 file system at ``where`` (False: not possible here)."""
    image = where.with_suffix(".img")
    where.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    ok = (not NO_MOUNT and subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)],
                         capture_output=True).returncode == 0
          and subprocess.run(["mount", "-o", "loop", str(image), str(where)],
                             capture_output=True).returncode == 0)
    try:
        yield ok
    finally:
        if ok:
            _unmount(where)
        image.unlink(missing_ok=True)


def _chattr(flag: str, *paths: Path) -> bool:
    return subprocess.run(["chattr", flag, *map(str, paths)],
                          capture_output=True).returncode == 0


def test_sqlite_read_only(tmp_path: Path, sqlite_template: Path) -> None:
    """A real read-only database: the file and its WAL made immutable
    (``chattr +i`` on a loop-mounted ext4; a read-only remount is refused while
    the server holds the file open, and an immutable ``-shm`` kills SQLite with
    SIGBUS, so it stays writable). The running server's writes then fail with a
    disk I/O error (503 ``storage_unavailable``) and a server started on the
    file gets SQLite's read-only error (503 ``storage_read_only``); reads keep
    working; clearing the flag heals both. Where loop mounts or chattr are not
    permitted, ``PRAGMA query_only`` gives the same SQLITE_READONLY path."""
    folder = tmp_path / "ro"
    with _ext4(folder) as real:
        db = (folder if real else tmp_path) / "runyard.db"
        shutil.copy(sqlite_template, db)
        url = f"sqlite:///{db}"
        files = (db, db.with_name("runyard.db-wal"))
        with local(create_app(Settings(database_url=url))) as client:
            assert client.post("/api/executions", json={"name": "before"}).status_code == 201
            real = real and _chattr("+i", *files)
            try:
                if real:
                    assert_refused(client.post("/api/executions", json={"name": "no"}),
                                    "storage_unavailable", "could not be read or written")
                    reads_work(client, "before")
                app = create_app(Settings(database_url=url))
                if not real:
                    _on_write_connect(app, "PRAGMA query_only=1")
                with local(app) as fresh:
                    assert_refused(fresh.post("/api/executions", json={"name": "no"}),
                                    "storage_read_only", "read-only", "writable again")
                    assert_refused(fresh.post("/api/ingest", json=big_batch("ro", 2)),
                                    "storage_read_only")
                    reads_work(fresh, "before")
            finally:
                if real:
                    _chattr("-i", *files)
            assert client.post("/api/executions", json={"name": "after"}).status_code == 201
        integrity(url)


def _on_write_connect(app: Any, pragma: str) -> None:
    """Run ``pragma`` on every new write connection of ``app``'s database once
    its lifespan has opened it (the read-only fallback)."""
    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with original(a) as state:
            engine = a.state.store.db.write_engine
            event.listen(engine, "connect", lambda conn, _record: conn.execute(pragma))
            engine.dispose()
            yield state

    app.router.lifespan_context = lifespan


# -- the mapping itself ---------------------------------------------------------

class _PgError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _sqlite_error(name: str, message: str) -> sqlite3.OperationalError:
    err = sqlite3.OperationalError(message)
    err.sqlite_errorname = name      # type: ignore[attr-defined]
    return err


@pytest.mark.parametrize(("orig", "code"), [
    (_sqlite_error("SQLITE_FULL", "database or disk is full"), "storage_full"),
    (_sqlite_error("SQLITE_READONLY_DBMOVED", "attempt to write a readonly database"),
     "storage_read_only"),
    (_sqlite_error("SQLITE_IOERR_WRITE", "disk I/O error"), "storage_unavailable"),
    (_sqlite_error("SQLITE_CANTOPEN", "unable to open database file"), "storage_unavailable"),
    (sqlite3.OperationalError("database or disk is full"), "storage_full"),
    (_sqlite_error("SQLITE_ERROR", "no such table: x"), None),
    (_PgError("53100"), "storage_full"),
    (_PgError("25006"), "storage_read_only"),
    (_PgError("57P01"), "storage_unavailable"),
    (_PgError("08006"), "storage_unavailable"),
    (_PgError(None), "storage_unavailable"),
    (_PgError("23505"), None),
    (_PgError("42P01"), None),
])
def test_driver_errors_map_to_one_of_three_503s(orig: Exception, code: str | None) -> None:
    """Each driver error the brief lists has its code; a bad query stays a bug."""
    failure = storage_failure(sa_exc.OperationalError("SELECT 1", {}, orig))
    assert (failure.code if failure else None) == code
    if failure is not None:
        assert failure.retry_after_s > 0 and failure.message
    assert storage_failure(sa_exc.IntegrityError("INSERT", {}, _PgError("23505"))) is None
