"""Alembic migrations: every revision walks up and down on both databases, and
the newest revision matches the models (``alembic check`` finds no drift)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from alembic import command
from app.db.engine import normalize_url
from app.db.migrate import alembic_config
from app.db.models import Base

PG_ADMIN_URL = os.environ.get("RUNYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all: a new SQLite file, or a new PostgreSQL
    database that is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    name = f"runyard_m_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # connection refused, no such role, ...
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {str(exc).splitlines()[0]}")
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _version(url: str) -> str | None:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_every_revision_walks_up_and_down(empty_url: str) -> None:
    cfg = alembic_config(empty_url)
    script = ScriptDirectory.from_config(cfg)
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions, "no revisions"
    model_tables = set(Base.metadata.tables)

    for revision in revisions:
        command.upgrade(cfg, revision)
        assert _version(empty_url) == revision
    assert _tables(empty_url) == model_tables | {"alembic_version"}

    for expected in reversed([None, *revisions[:-1]]):
        command.downgrade(cfg, "-1")
        assert _version(empty_url) == expected
    assert _tables(empty_url) - {"alembic_version"} == set()

    command.upgrade(cfg, "head")
    assert _version(empty_url) == script.get_current_head()
    assert _tables(empty_url) == model_tables | {"alembic_version"}
    # No drift between the models and the migrated schema.
    command.check(cfg)


def test_a_second_upgrade_to_head_changes_nothing(empty_url: str) -> None:
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "head")
    before = _tables(empty_url)
    command.upgrade(cfg, "head")
    assert _tables(empty_url) == before
    command.check(cfg)
