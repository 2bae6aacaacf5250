"""Shared fixtures: every store and API test runs on SQLite and on PostgreSQL.

SQLite: each test gets a copy of a freshly migrated database file.
PostgreSQL: each test session creates its own database (so parallel sessions
never collide), migrates it once, and each test starts from empty tables. When
PostgreSQL cannot be reached the PostgreSQL half is skipped locally but fails
under CI=true: CI must never pass without it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from app.db.engine import open_database
from app.db.migrate import upgrade
from app.factory import create_app
from app.settings import Settings
from app.store import Store

PG_ADMIN_URL = os.environ.get("RUNYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("job", "execution_event", "execution_interaction", "execution_tool_call", "execution",
          "api_token")


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not reachable: {reason}")


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """A migrated PostgreSQL database that lives as long as the test session."""
    name = f"runyard_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # connection refused, no such role, ...
        admin.dispose()
        _pg_unavailable(str(exc).splitlines()[0])
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy for each test."""
    path = tmp_path_factory.mktemp("template") / "runyard.db"
    upgrade(f"sqlite:///{path}")
    return path


def _empty_pg(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "runyard.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_session_url")
    _empty_pg(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty SQLite database, for tests whose subject does not
    depend on the database (one run is enough; no skipped PostgreSQL twin)."""
    path = tmp_path / "runyard.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A store over an empty database."""
    db = open_database(database_url)
    yield Store(db)
    db.dispose()


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    """The whole app, lifespan included, over an empty database."""
    app = create_app(Settings(database_url=database_url))
    # A loopback peer and Host: with no token, only this machine is served (issue 7).
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000",
                    client=("127.0.0.1", 50000)) as c:
        yield c
