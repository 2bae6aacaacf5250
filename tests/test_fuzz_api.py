"""Schemathesis against ``/api/openapi.json``: every JSON route, bounded and repeatable.

Each operation of the document is one test. Hypothesis builds requests from the
document (valid ones and, schemathesis's negative mode, invalid ones) and every
answer must be no 5xx, a documented status code, a documented content type and
a body that matches the documented schema. The examples are bounded and
derandomized, so CI runs the same requests every time and the file stays well
under three minutes on SQLite.

The app runs in process (schemathesis's ASGI transport, which also runs its
lifespan) over one database of each kind for the whole module, so later
operations meet the rows earlier ones wrote, and a few seeded rows give the
path parameters something to find. Not fuzzed: the SSE streams (``/api/stream``,
``/api/executions/{id}/stream``) never end, so they are not in the document
that drives this test (tests/test_live.py covers them against a real server);
nor are the page's HTML routes (tests/test_web_hostile.py fuzzes those).
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.openapi import build_document
from app.db.engine import open_database
from app.factory import create_app
from app.settings import Settings
from app.store import Store
from app.store.inputs import ExecutionCreate

# The host schemathesis's in-process client sends. Naming it as the server's
# host lets the job routes answer like they would on 127.0.0.1 (they refuse a
# Host that is neither loopback nor the configured one: DNS rebinding).
FUZZ_HOST = asgi.HOST
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]

# OTLP's protobuf body is opaque bytes here: send what hypothesis makes as it is
# (the decoder must answer 400 to garbage, never 500).
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")
# The document is built from code (no server needed), so the operations are known
# when pytest collects this file: one test per operation.
schema = schemathesis.openapi.from_dict(build_document())


@pytest.fixture(scope="module", params=[
    "sqlite", "sqlite-scoped-token", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fuzz_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            ) -> tuple[str, str | None]:
    """One database of each kind for the whole module (PostgreSQL: the session's), and
    the Bearer token to send, if any. With a token the auth middleware and the scope
    plumbing are fuzzed too: it has every role but sees only its own scope."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_session_url")
        return url, None
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path_factory.mktemp("fuzz") / "runyard.db"
    shutil.copy(template, path)
    url = f"sqlite:///{path}"
    if request.param == "sqlite":
        return url, None
    db = open_database(url)
    try:
        store = Store(db)
        # Another scope's run: the token must never see it, whatever it asks.
        store.create_execution(ExecutionCreate(id="other-scope", name="not yours"))
        _, token = store.create_token("fuzz", ["read", "write", "exec"], scope_id="fuzz")
    finally:
        db.dispose()
    return url, token


@dataclass
class Fuzzed:
    """The app under test and the ids of the rows seeded in its database."""

    app: ASGIApp
    # Path parameter -> seeded ids; about half of the fuzzed cases aim at one of them.
    ids: dict[str, list[str]]
    headers: dict[str, str]


@pytest.fixture(scope="module")
def fuzzed(fuzz_db: tuple[str, str | None]) -> Iterator[Fuzzed]:
    """The app over ``fuzz_db``, running commands allowed but never run.

    The routes see ``allow_exec`` on (so the job routes are fuzzed past their
    403), while the lifespan was built with it off, so no worker runs in this
    process: a fuzzed command is queued, and nothing claims it. Random shell
    text must never execute on a developer's machine.
    """
    # The rate limit is off: hypothesis sends hundreds of requests a second, and a
    # 429 would only hide what the request itself does (tests/test_limits.py has it).
    url, token = fuzz_db
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = Settings(database_url=url, host=FUZZ_HOST, allow_exec=False,
                    rate_limit_per_s=0)
    app = create_app(base)
    app.state.settings = base.with_(allow_exec=True)

    async def from_loopback(scope: Scope, receive: Receive, send: Send) -> None:
        # schemathesis's client calls itself "testclient"; while no token exists only
        # loopback clients are served, as on a fresh install reached from 127.0.0.1.
        if scope["type"] == "http":
            scope = {**scope, "client": ("127.0.0.1", 50000)}
        await app(scope, receive, send)

    try:
        yield Fuzzed(from_loopback, _seed(from_loopback, headers), headers)
    finally:
        # schemathesis started the lifespan on the first request; end it with the module.
        asgi.shutdown_lifespans()


def _seed(app: ASGIApp, headers: dict[str, str]) -> dict[str, list[str]]:
    """Rows the fuzzed path ids can hit: random ids alone would only ever meet a 404."""
    ids = {"execution_id": ["fz-run", "other-scope"], "tool_call_id": ["fz-tc"],
           "interaction_id": ["fz-ia"]}
    with asgi.get_client(app) as client:
        for path, body in [
            ("/api/executions", {"id": "fz-run", "name": "fuzz"}),
            ("/api/executions/fz-run/tool-calls", {"id": "fz-tc", "tool_path": "fuzz.step"}),
            ("/api/executions/fz-run/interactions",
             {"id": "fz-ia", "kind": "elicitation", "message": "?"}),
            ("/api/jobs", {"command": {"argv": ["true"]}, "requires_approval": True,
                           "idempotency_key": "fuzz-job", "name": "fuzz job"}),
        ]:
            r = client.post(path, json=body, headers=headers)
            assert r.status_code in (200, 201, 202), r.text
            if path == "/api/jobs":
                ids["execution_id"].append(r.json()["execution_id"])
    return ids


def _aim_at_seeded_rows(case: schemathesis.Case, ids: dict[str, list[str]]) -> None:
    # A stable choice (crc32, not hash()): CI must send the same requests every run.
    params = case.path_parameters or {}
    for name, value in list(params.items()):
        if name in ids and isinstance(value, str):
            pick = zlib.crc32(value.encode("utf-8", "surrogatepass")) % (2 * len(ids[name]))
            if pick < len(ids[name]):
                params[name] = ids[name][pick]


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    _aim_at_seeded_rows(case, fuzzed.ids)
    response = case.call_and_validate(app=fuzzed.app, checks=CHECKS, headers=fuzzed.headers)
    # A scoped token never gets another scope's run back, whatever it asked.
    assert b"not yours" not in response.content
