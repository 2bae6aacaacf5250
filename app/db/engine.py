"""Engines for SQLite and PostgreSQL, with the connection settings each needs.

SQLite gets two engines. The write engine has a pool of exactly one
connection, so writes from many threads queue for it instead of racing for the
file lock; each write transaction starts with ``BEGIN IMMEDIATE`` so a second
*process* (a worker) waits on ``busy_timeout`` rather than failing with
"database is locked" when it upgrades a read to a write. (Not StaticPool: that
shares one connection between threads without serializing them.) The read
engine has its own pool of query-only connections; in WAL mode readers never
wait on the writer. PostgreSQL uses one pool for both.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from app.db.checkpoint import Checkpointer
from app.db.dialect import Dialect
from app.db.writelock import WriterLock

# libpq options for every PostgreSQL connection (the pool's and LISTEN's).
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
    "keepalives_interval": 5, "keepalives_count": 3,
}


def normalize_url(url: str) -> str:
    """Accept plain ``sqlite:///path`` and ``postgresql://…`` and pick our drivers."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError(
                "an in-memory SQLite database cannot be shared between connections: "
                "use a file, e.g. sqlite:///data/runyard.db"
            )
        return parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    if backend in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://…")


@dataclass
class Database:
    """The engines of one database and its dialect."""

    url: str
    dialect: Dialect
    write_engine: Engine
    read_engine: Engine
    checkpointer: Checkpointer | None = None
    writer_lock: WriterLock | None = None

    def writer_turn(self) -> contextlib.AbstractContextManager[None]:
        """Around a write transaction (after its connection is checked out,
        before BEGIN): on SQLite, this process's turn among every process
        writing the file (app.db.writelock). PostgreSQL needs none."""
        return self.writer_lock.held() if self.writer_lock else contextlib.nullcontext()

    def dispose(self) -> None:
        """Close every pooled connection (and stop the SQLite checkpoint thread)."""
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()
        if self.writer_lock is not None:
            self.writer_lock.close()


def bind_plain_values_fast() -> None:
    """Bind ``None`` and ``bool`` parameters without an exception each.

    Python's sqlite3 binds an exact ``int``, ``float`` or ``str`` directly, but
    sends every other value, ``None`` and ``bool`` included, through its
    adapter protocol: with no adapter registered it looks ``__adapt__`` up on
    the protocol class, and that failed lookup raises (and drops) an
    AttributeError: 1.1 us per ``None`` against 0.24 for an ``int``, 6% of a
    bulk import's instructions, and every write binds some. A registered
    adapter is found first: ``None`` maps to itself (``{}.get``, a C callable,
    answers None for any key) and ``bool`` to ``int``. What is stored does not
    change: NULL and 0/1, as before. The registry is the sqlite3 module's, so
    this holds for the whole process; it is idempotent.
    """
    sqlite3.register_adapter(type(None), {}.get)
    sqlite3.register_adapter(bool, int)


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file, so a first start just works."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def open_database(url: str, read_pool_size: int = 8) -> Database:
    """Create the engines for ``url`` (creating a SQLite file's folder)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        ensure_sqlite_folder(url)
        bind_plain_values_fast()
        write = create_engine(url, poolclass=QueuePool, pool_size=1, max_overflow=0,
                              pool_timeout=60)
        _sqlite_listeners(write, begin="BEGIN IMMEDIATE", query_only=False)
        # LIFO: the most recently used connection, whose page cache is warm,
        # serves the next read (FIFO rotated through cold caches).
        read = create_engine(url, poolclass=QueuePool, pool_size=read_pool_size,
                             max_overflow=read_pool_size, pool_use_lifo=True)
        _sqlite_listeners(read, begin="BEGIN", query_only=True)
        path = str(make_url(url).database)
        checkpointer = Checkpointer(path)
        event.listen(write, "commit", lambda _conn: checkpointer.notify())
        return Database(url, Dialect.SQLITE, write, read, checkpointer, WriterLock(path))
    # Surviving a PostgreSQL restart: pre-ping replaces a pooled connection
    # that died with the old server at checkout (and a disconnect error drops
    # the whole pool), and a request fails within seconds while the server is
    # down, instead of hanging: a connect gives up after 5 s, a dead peer is
    # noticed by TCP keepalives, and a request waits at most 10 s for a pooled
    # connection. Each of those failures answers 503 (app.store.errors).
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True,
                           pool_timeout=10, connect_args=PG_CONNECT_ARGS)
    # Reads share the pool but run REPEATABLE READ, READ ONLY: the several
    # queries behind one list response (page, total, facets, timeline) then
    # see one snapshot and agree with each other, as they do on SQLite.
    read = engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    _default_read_write(engine)
    return Database(url, Dialect.POSTGRESQL, engine, read)


def _default_read_write(engine: Engine) -> None:
    """Let a write transaction take the database's own default mode.

    A connection the read engine used comes back with psycopg's ``read_only``
    reset to False, and psycopg then opens every transaction with ``BEGIN READ
    WRITE``, overriding a database an operator made read-only
    (``default_transaction_read_only``). Back to None (plain ``BEGIN``), such a
    database refuses the write (25006), which answers 503 ``storage_read_only``."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None and getattr(dbapi_conn, "read_only", None) is False:
            # A broken connection refuses the change; the pool discards it anyway.
            with contextlib.suppress(Exception):
                dbapi_conn.read_only = None


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _wal(cur: Any) -> None:
    """Switch the file to WAL (a no-op once it is). On a new file, connections
    opened at once race for it, and SQLite answers the losers "database is
    locked" at once (deadlock avoidance: the busy timeout does not apply to
    that escalation), so retry for up to 10 s before giving up."""
    for attempt in range(500):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 499:
                raise
            time.sleep(0.02)


def _sqlite_listeners(engine: Engine, *, begin: str, query_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so our BEGIN is the one used.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=10000")
        _wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode; only an OS
        # crash can lose the last transactions.
        cur.execute("PRAGMA synchronous=NORMAL")
        if query_only:
            cur.execute("PRAGMA query_only=1")
            # Readers: SQLite's default 2 MB of page cache each and no mmap, so
            # the process's memory stays bounded as the database grows. Each
            # connection maps the file itself, and RSS counts a mapped page once
            # per mapping: with a pool of readers RSS grew with the database
            # (47 -> 233 MB of file pages in a 4-minute soak); with 8 MB caches
            # the heap grew by the pool's size times 8 MB instead. Pages come
            # from the OS page cache by read(): `meta` costs ~3% more CPU.
            cur.execute("PRAGMA cache_size=-2048")
        else:
            # The one writer: 16 MB of cache (a 1,000-run import dirties ~8 MB)
            # and reads through the OS page cache by mmap, which a bulk
            # import's random index inserts gain from (+6% at 300,000 runs).
            cur.execute("PRAGMA cache_size=-16384")
            cur.execute("PRAGMA mmap_size=1073741824")
            # The checkpoint thread (app.db.checkpoint) keeps the WAL small;
            # a writer checkpoints itself only past ~100 MB (25,000 pages), if
            # that thread falls behind. (SQLite's default, ~4 MB, made small
            # frequent commits, OTLP batches and job output, checkpoint after
            # nearly every commit: commit cost per span 33-45 -> 21 us.)
            cur.execute("PRAGMA wal_autocheckpoint=25000")
        cur.close()
        # SQLite's lower() folds ASCII only, so `q=émile` would miss "Émile"
        # (PostgreSQL folds it). Replace it for this connection with Python's.
        dbapi_conn.create_function("lower", 1, _lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)
