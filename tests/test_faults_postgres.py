"""Faults of PostgreSQL itself, with real conditions: a private cluster stopped
and restarted under load, and a database that has become read-only.

What must hold: a failing database answers 503 with a code and a message that
says what to do (never a 500, never a hang); reads go on where the database
can still read; the server, its worker and its streams recover by themselves,
and a stream resumed with ``Last-Event-ID`` sees every row once.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from app.db.dialect import Dialect, insert_rows
from app.db.engine import normalize_url
from app.db.migrate import upgrade
from app.db.models import server_keys
from app.factory import create_app
from app.settings import Settings
from app.store.errors import storage_failure
from tests.conftest import PG_ADMIN_URL
from tests.faults_support import (
    Server,
    StreamReader,
    assert_refused,
    big_batch,
    engine_for,
    local,
    otlp_body,
    reads_work,
    server_log_fixture,  # noqa: F401 (the server_log fixture, found by pytest here)
    until,
)
from tests.pg_cluster import Cluster, ClusterUnavailable, private_cluster


@dataclass
class Outcome:
    what: str
    status: int     # 0: no answer (a transport error)
    code: str
    seconds: float
    at: float


class LoadWriter(threading.Thread):
    """Creates runs and appends to a long run without pause, recording every answer."""

    def __init__(self, base: str, tail_id: str, name: str) -> None:
        super().__init__(daemon=True)
        self.base, self.tail_id, self.name = base, tail_id, name
        self.outcomes: list[Outcome] = []
        self.acked: list[str] = []
        self.stopping = threading.Event()

    def _call(self, http: httpx.Client, what: str, method: str, path: str,
              body: dict[str, Any]) -> int:
        started = time.monotonic()
        try:
            r = http.request(method, path, json=body)
            status = r.status_code
            code = r.json().get("error", {}).get("code", "") if status >= 400 else ""
        except httpx.HTTPError as exc:
            status, code = 0, type(exc).__name__
        self.outcomes.append(Outcome(what, status, code, time.monotonic() - started,
                                     time.monotonic()))
        return status

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            n = 0
            while not self.stopping.is_set():
                n += 1
                eid = f"{self.name}-{n}"
                if self._call(http, "create", "POST", "/api/executions",
                              {"id": eid, "name": "under load"}) == 201:
                    self.acked.append(eid)
                self._call(http, "append", "POST", f"/api/executions/{self.tail_id}/events",
                           {"events": [{"message": f"{eid}"}]})
                # Keep the server busy, not the two cores of a CI machine.
                time.sleep(0.01)

    def halt(self) -> None:
        self.stopping.set()
        self.join(60)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    try:
        with private_cluster() as c:
            yield c
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"a private PostgreSQL cluster is needed in CI: {exc}")
        pytest.skip(f"no private PostgreSQL cluster on this machine: {exc}")


@pytest.mark.postgres
def test_postgres_restart_under_load(cluster: Cluster, server_log: Path) -> None:
    """Stop PostgreSQL (``-m fast``), start it again, then ``restart -m
    immediate``, all while clients write and two streams are open: writes
    fail with a quick 503 ``storage_unavailable`` (never a 500 or a hang)
    while it is down and succeed again after, with no restart of ours;
    ``/healthz``, the page, the in-process worker and both streams recover;
    the run stream and a later resume with ``Last-Event-ID`` from before the
    restarts bring every event exactly once, in order."""
    cluster.create_database("runyard")
    url = cluster.url("runyard")
    server = Server(url, server_log, "--allow-exec")
    base = server.start()
    http = httpx.Client(base_url=base, timeout=30)
    try:
        tail = "tail-run"
        assert http.post("/api/executions", json={"id": tail, "name": "tail"}).status_code == 201
        list_reader = StreamReader(base, "/api/stream")
        run_reader = StreamReader(base, f"/api/executions/{tail}/stream")
        for r in (list_reader, run_reader):
            r.start()
            assert r.connected.wait(30)
        writers = [LoadWriter(base, tail, f"w{i}") for i in range(2)]
        for w in writers:
            w.start()
        until(lambda: sum(len(w.acked) for w in writers) >= 20, 60, "writes before the stop")
        before_stop = run_reader.last
        assert before_stop is not None

        cluster.stop("fast")
        down_at = time.monotonic()
        until(lambda: sum(o.status == 503 for w in writers for o in w.outcomes
                           if o.at > down_at) >= 6, 30, "writes to fail during the outage")
        health = http.get("/healthz")
        assert health.status_code == 503, health.text
        view = http.get("/", headers={"HX-Request": "true", "HX-Target": "view"})
        assert view.status_code == 503
        assert 'data-code="storage_unavailable"' in view.text
        assert "The database is unavailable" in view.text and 'id="view"' in view.text
        page = http.get("/")
        assert page.status_code == 503 and "retry in a few seconds" in page.text
        form = http.post("/runs/jobs", data={"command": "echo hi"},
                         headers={"HX-Request": "true", "HX-Target": "run-form"})
        assert form.status_code == 503 and 'id="run-form"' in form.text, form.text[:500]
        assert "The database is unavailable" in form.text
        api = http.post("/api/executions", json={"name": "while down"})
        assert api.status_code == 503 and api.headers["Retry-After"] == "2"
        assert api.json()["error"]["code"] == "storage_unavailable"
        assert "retry" in api.json()["error"]["message"]

        cluster.start()
        up_at = time.monotonic()
        until(lambda: http.get("/healthz").status_code == 200, 30, "/healthz after the start")
        until(lambda: any(o.status == 201 and o.at > up_at for w in writers
                           for o in w.outcomes), 30, "writes to succeed again")

        cluster.restart("immediate")
        again_at = time.monotonic()
        until(lambda: sum(o.status == 201 and o.at > again_at for w in writers
                           for o in w.outcomes) >= 10, 30, "writes after the crash restart")
        for w in writers:
            w.halt()
        assert server.alive(), "the server needed a restart"

        outcomes = [o for w in writers for o in w.outcomes]
        failures = [o for o in outcomes if o.status != 201]
        assert {o.status for o in failures} <= {503}, failures[:5]
        assert {o.code for o in failures} <= {"storage_unavailable"}, failures[:5]
        assert max(o.seconds for o in outcomes) < 8, "a write hung during the outage"

        # The worker in this process survived too: a job submitted now runs.
        job = http.post("/api/jobs", json={"command": {"argv": ["echo", "back"]}})
        assert job.status_code == 202, job.text
        job_id = job.json()["execution_id"]
        until(lambda: http.get(f"/api/executions/{job_id}").json()["execution"]["status"]
               == "completed", 30, "the job submitted after the restarts to complete")

        assert http.patch(f"/api/executions/{tail}", json={"status": "completed"}
                          ).status_code == 200
        stored = _event_ids(url, tail)
        until(lambda: run_reader.ended, 30, "the run stream's end")
        got = run_reader.ids()
        assert got == stored, "the run stream lost or repeated events across the restarts"
        acked = {e for w in writers for e in w.acked}
        until(lambda: acked <= list_reader.execution_ids(), 30, "every created run listed")
        list_reader.halt()
        listed = list_reader.ids()
        assert len(listed) == len(set(listed)) and listed == sorted(listed)

        # A client that was away since before the stop resumes from there.
        late = StreamReader(base, f"/api/executions/{tail}/stream", after=before_stop)
        late.start()
        until(lambda: late.ended, 30, "the resumed run stream's end")
        assert late.ids() == [i for i in stored if i > before_stop]
    except BaseException:
        print(f"server log:\n{server.log()}\npostgres log:\n{cluster.log_tail()}")
        raise
    finally:
        http.close()
        server.stop()


def _event_ids(url: str, execution_id: str) -> list[int]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text(
                "SELECT id FROM execution_event WHERE execution_id = :e ORDER BY id"),
                {"e": execution_id})]
    finally:
        engine.dispose()

@pytest.mark.postgres
def test_postgres_read_only_database(pg_session_url: str) -> None:
    """``default_transaction_read_only`` on a private database gives real
    25006 errors: writes answer 503 ``storage_read_only``, reads work."""
    name = f"runyard_ro_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        upgrade(url)
        settings = Settings(database_url=url)
        with local(create_app(settings)) as client:
            assert client.post("/api/executions", json={"name": "before"}).status_code == 201
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        with local(create_app(settings)) as client:
            assert_refused(client.post("/api/executions", json={"name": "no"}),
                            "storage_read_only", "read-only")
            assert_refused(client.post("/api/ingest", json=big_batch("ro", 2)),
                            "storage_read_only")
            otlp = client.post("/v1/traces", json=otlp_body())
            assert otlp.status_code == 503 and otlp.json()["code"] == 14
            reads_work(client, "before")
        # COPY (bulk rows: job output, OTLP tool calls) bypasses SQLAlchemy;
        # its failure must still read as the same 503, not a 500.
        engine = create_engine(normalize_url(url))
        try:
            with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
                insert_rows(Dialect.POSTGRESQL, conn, server_keys, ("name", "value"),
                            [("copy-test", "x")])
        finally:
            engine.dispose()
        failure = storage_failure(caught.value)
        assert failure is not None and failure.code == "storage_read_only"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
