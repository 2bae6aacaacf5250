"""SQLite binds None and bool through registered adapters (app.db.engine), and
what it stores is what sqlite3 stored without them: NULL, 1 and 0."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.db.engine import open_database


def test_none_and_bool_bind_as_null_and_integers(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'binding.db'}")
    try:
        # The fast path is in place: a registered adapter is found before the
        # failing __adapt__ lookup that costs an exception per value.
        for kind in (type(None), bool):
            assert (kind, sqlite3.PrepareProtocol) in sqlite3.adapters
        with db.write_engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (a, b, c, d, e)")
            conn.exec_driver_sql("INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                                 [(None, True, False, 7, "x"), (None, None, True, 0, None)])
            rows = conn.exec_driver_sql(
                "SELECT a, typeof(a), b, typeof(b), c, typeof(c), d, e FROM t ORDER BY rowid",
            ).all()
        assert [tuple(r) for r in rows] == [
            (None, "null", 1, "integer", 0, "integer", 7, "x"),
            (None, "null", None, "null", 1, "integer", 0, None)]
    finally:
        db.dispose()
