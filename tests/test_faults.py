"""Faults, with real processes and real conditions: the server killed with
SIGKILL during a bulk ingest, PostgreSQL restarted under load, and a database
whose disk is full or that has become read-only.

What must hold: every acknowledged write survives and nothing half-written is
visible; the SQLite file is never corrupt; a failing database answers 503
with a code and a message that says what to do (never a 500, never a hang);
reads go on where the database can still read; the server recovers by itself
and a stream resumed with ``Last-Event-ID`` sees every row once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from starlette.testclient import TestClient

from app.db.engine import normalize_url
from app.db.migrate import upgrade
from app.factory import create_app
from app.run_command import SSE, events
from app.settings import Settings
from app.store.errors import storage_failure
from tests.conftest import PG_ADMIN_URL
from tests.pg_cluster import Cluster, ClusterUnavailable, private_cluster
from tests.servers import free_port

# Fault tests hammer one server from several threads: no rate or stream cap.
SERVER_ENV = {"RUNYARD_RATE_LIMIT_PER_S": "0", "RUNYARD_MAX_STREAMS_PER_CLIENT": "0"}


def _until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# -- a server process we can kill -------------------------------------------

class Server:
    """``runyard serve`` as a child process that a test may SIGKILL and start again."""

    def __init__(self, database_url: str, log_path: Path, *extra: str) -> None:
        self.database_url, self.log_path, self.extra = database_url, log_path, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self) -> str:
        port = free_port()
        env = {**os.environ, **SERVER_ENV, "RUNYARD_DATABASE_URL": self.database_url}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--no-demo", "--port", str(port),
                 *self.extra], env=env, stdout=subprocess.DEVNULL, stderr=log)
        self.base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log()}")
            try:
                return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _until(up, 60, "the server to answer /healthz", every=0.1)
        return self.base

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@pytest.fixture
def server_log(tmp_path: Path) -> Path:
    return tmp_path / "server.log"


# -- stream readers ----------------------------------------------------------

class StreamReader(threading.Thread):
    """Reads one SSE path; on any break reconnects with ``Last-Event-ID`` (as a
    browser does) until stopped, the server is gone for good, or ``end``."""

    def __init__(self, base: str, path: str, after: int | None = None,
                 reconnect: bool = True) -> None:
        super().__init__(daemon=True)
        self.base, self.path, self.reconnect = base, path, reconnect
        self.last = after
        self.messages: list[SSE] = []
        self.connects = 0
        self.ended = False
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stopping.is_set() and not self.ended:
            headers = {} if self.last is None else {"Last-Event-ID": str(self.last)}
            try:
                # The read timeout (no ping comes for 15 s) also exercises resuming.
                with httpx.Client(timeout=httpx.Timeout(10, read=3)) as client, \
                        client.stream("GET", self.base + self.path, headers=headers) as r:
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code}: {r.read()[:300]!r}")
                        time.sleep(0.3)
                        continue
                    self.connects += 1
                    self.connected.set()
                    for message in events(line.encode() for line in r.iter_lines()):
                        if message.event == "end":
                            self.ended = True
                            return
                        self.messages.append(message)
                        self.last = int(message.id or 0)
                        if self.stopping.is_set():
                            return
            except httpx.HTTPError as exc:
                self.errors.append(type(exc).__name__)
            if not self.reconnect:
                return
            time.sleep(0.1)

    def ids(self) -> list[int]:
        return [int(m.id or 0) for m in self.messages]

    def execution_ids(self) -> set[str]:
        return {json.loads(m.data)["id"] for m in self.messages if m.event == "execution"}

    def halt(self) -> None:
        self.stopping.set()
        self.join(15)


# -- 1. kill -9 during bulk ingest --------------------------------------------

@dataclass
class Sent:
    """One write request: what it would create, and whether it was acknowledged."""

    executions: list[str]
    tool_calls: list[str] = field(default_factory=list)
    interactions: list[str] = field(default_factory=list)
    logs_per_execution: int = 0     # `log` events each execution gets
    acked: bool = False


@dataclass
class Ledger:
    """Every write the clients sent, shared by the writer threads."""

    batches: list[Sent] = field(default_factory=list)
    # Single creates, then one append of events each.
    creates: list[Sent] = field(default_factory=list)
    appends: list[tuple[str, int, bool]] = field(default_factory=list)  # id, size, acked
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked_batches(self) -> int:
        with self.lock:
            return sum(b.acked for b in self.batches)


def _batch_body(prefix: str, n: int) -> tuple[dict[str, Any], Sent]:
    sent = Sent([], logs_per_execution=4)
    executions = []
    for j in range(5):
        eid = f"{prefix}-b{n}-e{j}"
        calls = [f"{eid}-t{k}" for k in range(2)]
        ask = f"{eid}-i0"
        sent.executions.append(eid)
        sent.tool_calls += calls
        sent.interactions.append(ask)
        executions.append({
            "id": eid, "name": f"batch {n} #{j}", "status": "completed", "trigger_kind": "cli",
            "code": "x" * 2000, "created_at": 1_700_000_000_000 + n * 10 + j,
            "started_at": 1_700_000_000_000 + n * 10 + j,
            "completed_at": 1_700_000_000_500 + n * 10 + j,
            "tool_calls": [{"id": c, "tool_path": "github.issues.list", "status": "completed"}
                           for c in calls],
            "interactions": [{"id": ask, "message": "ok?", "status": "resolved",
                              "action": "accept"}],
            "events": [{"message": f"{eid}:log{k}", "level": "warn" if k == 0 else "info"}
                       for k in range(4)],
        })
    return {"executions": executions}, sent


def _writer(base: str, prefix: str, ledger: Ledger, stop: threading.Event) -> None:
    """Alternate bulk ingests with single creates and appends until the server dies."""
    with httpx.Client(base_url=base, timeout=30) as http:
        n = 0
        appending: str | None = None    # a run whose append is on the wire
        while not stop.is_set():
            n += 1
            try:
                if n % 3:
                    body, sent = _batch_body(prefix, n)
                    with ledger.lock:
                        ledger.batches.append(sent)
                    r = http.post("/api/ingest", json=body)
                    if r.status_code != 200:
                        ledger.unexpected.append(f"ingest {r.status_code} {r.text[:200]}")
                    sent.acked = r.status_code == 200
                    continue
                eid = f"{prefix}-s{n}"
                sent = Sent([eid])
                with ledger.lock:
                    ledger.creates.append(sent)
                r = http.post("/api/executions", json={"id": eid, "name": "single"})
                if r.status_code != 201:
                    ledger.unexpected.append(f"create {r.status_code} {r.text[:200]}")
                    continue
                sent.acked = True
                appending = eid
                r = http.post(f"/api/executions/{eid}/events", json={"events": [
                    {"message": f"{eid}:log{k}"} for k in range(3)]})
                appending = None
                with ledger.lock:
                    ledger.appends.append((eid, 3, r.status_code == 201))
                if r.status_code != 201:
                    ledger.unexpected.append(f"append {r.status_code} {r.text[:200]}")
            except httpx.TransportError:
                if appending is not None:   # cut off: it may or may not have landed
                    with ledger.lock:
                        ledger.appends.append((appending, 3, False))
                return


def _engine(url: str) -> Engine:
    return create_engine(normalize_url(url))


def _check_ledger(url: str, ledger: Ledger) -> tuple[int, int]:
    """Assert every acknowledged write is stored and no batch is half there.
    Returns (stored executions, acknowledged batches)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(text("SELECT id FROM execution"))}
            calls = {r[0] for r in conn.execute(text("SELECT id FROM execution_tool_call"))}
            asks = {r[0] for r in conn.execute(text("SELECT id FROM execution_interaction"))}
            logs = dict(conn.execute(text(
                "SELECT execution_id, count(*) FROM execution_event WHERE type = 'log' "
                "GROUP BY execution_id")).all())
            created = dict(conn.execute(text(
                "SELECT execution_id, count(*) FROM execution_event "
                "WHERE type = 'execution.created' GROUP BY execution_id")).all())
            seqs: dict[str, list[int]] = {}
            for eid, seq in conn.execute(text(
                    "SELECT execution_id, seq FROM execution_event ORDER BY execution_id, seq")):
                seqs.setdefault(eid, []).append(seq)
            ids = [r[0] for r in conn.execute(text("SELECT id FROM execution_event ORDER BY id"))]
    finally:
        engine.dispose()
    for b in ledger.batches:
        present = [e in stored for e in b.executions]
        assert all(present) or not any(present), f"half a batch is visible: {b}"
        if b.acked:
            assert all(present), f"an acknowledged batch is lost: {b.executions}"
        if all(present):
            assert set(b.tool_calls) <= calls and set(b.interactions) <= asks, b
            assert all(logs.get(e) == b.logs_per_execution for e in b.executions), b
        else:
            assert not set(b.tool_calls) & calls and not set(b.interactions) & asks, b
    for c in ledger.creates:
        if c.acked:
            assert c.executions[0] in stored, f"an acknowledged create is lost: {c}"
    appended: dict[str, list[tuple[int, bool]]] = {}
    for eid, size, acked in ledger.appends:
        appended.setdefault(eid, []).append((size, acked))
    for eid, parts in appended.items():
        sure = sum(size for size, acked in parts if acked)
        maybe = sum(size for size, acked in parts if not acked)
        assert logs.get(eid, 0) in (sure, sure + maybe), (eid, logs.get(eid), parts)
    # The feed as a resuming reader walks it: one creation per run, each run's
    # seqs without holes, and (SQLite, which never skips an id) ids without holes.
    assert all(created.get(e) == 1 for e in stored), "a run without exactly one creation"
    for eid, run_seqs in seqs.items():
        assert run_seqs == list(range(run_seqs[0], run_seqs[0] + len(run_seqs))), eid
    if url.startswith("sqlite") and ids:
        assert ids == list(range(ids[0], ids[0] + len(ids))), "the feed has a hole"
    return len(stored), sum(b.acked for b in ledger.batches)


def _integrity(url: str) -> None:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()


def _stored_executions(url: str) -> set[str]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT id FROM execution"))}
    finally:
        engine.dispose()


def _list_reader(base: str, after: int | None) -> StreamReader:
    """A list stream from ``after`` that ends with the server (no reconnect)."""
    reader = StreamReader(base, "/api/stream", after=after, reconnect=False)
    reader.start()
    assert reader.connected.wait(30), "the list stream did not connect"
    return reader


def test_kill9_during_bulk_ingest_loses_no_acknowledged_write(
        database_url: str, server_log: Path) -> None:
    """SIGKILL the server while 4 clients ingest; after each restart every
    acknowledged write is there, every batch is all or nothing, the feed has
    no holes, the file passes ``PRAGMA integrity_check``, and a list stream
    resumed with ``Last-Event-ID`` brings exactly the runs it had not seen."""
    # Three cut points; on PostgreSQL (the server is killed, not the database) one.
    cuts = 3 if database_url.startswith("sqlite") else 1
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    server = Server(database_url, server_log)
    ledger = Ledger()
    seen: set[str] = set()      # runs the list streams brought
    all_ids: list[int] = []     # and their message ids, over every stream
    last: int | None = None

    def collect(reader: StreamReader) -> None:
        nonlocal last, seen
        ids = reader.ids()
        assert all(i > (last or 0) for i in ids), "a resumed stream repeated a row"
        all_ids.extend(ids)
        assert len(set(all_ids)) == len(all_ids), f"a row came twice (seed {seed})"
        seen |= reader.execution_ids()
        last = ids[-1] if ids else last

    try:
        reader = _list_reader(server.start(), None)
        for cut in range(cuts):
            stop = threading.Event()
            writers = [threading.Thread(target=_writer, daemon=True,
                                        args=(server.base, f"c{cut}w{t}", ledger, stop))
                       for t in range(4)]
            for w in writers:
                w.start()
            target = ledger.acked_batches() + rng.randint(2, 12)
            _until(lambda t=target: ledger.acked_batches() >= t, 60,   # type: ignore[misc]
                   f"{target} acknowledged batches (seed {seed})")
            server.kill9()
            stop.set()
            for w in writers:
                w.join(30)
            reader.join(30)
            assert not ledger.unexpected, ledger.unexpected[:5]
            # Before anything opens the file again: the crash left it sound.
            _integrity(database_url)
            stored, acked = _check_ledger(database_url, ledger)
            assert acked >= target and stored >= acked * 5
            collect(reader)
            # Restarted, the stream resumed where it was brings the rest, once each.
            reader = _list_reader(server.start(), last)
            want = _stored_executions(database_url)
            _until(lambda r=reader, w=want: w <= seen | r.execution_ids(),  # type: ignore[misc]
                   60, f"the resumed stream to bring every stored run (seed {seed})")
        server.stop()
        reader.join(30)
        collect(reader)
        _integrity(database_url)
    except BaseException:
        print(f"seed {seed}; server log:\n{server.log() if server_log.exists() else ''}")
        raise
    finally:
        server.stop()


# -- 2. PostgreSQL restarted under load ---------------------------------------

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
        _until(lambda: sum(len(w.acked) for w in writers) >= 20, 60, "writes before the stop")
        before_stop = run_reader.last
        assert before_stop is not None

        cluster.stop("fast")
        down_at = time.monotonic()
        _until(lambda: sum(o.status == 503 for w in writers for o in w.outcomes
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
        _until(lambda: http.get("/healthz").status_code == 200, 30, "/healthz after the start")
        _until(lambda: any(o.status == 201 and o.at > up_at for w in writers
                           for o in w.outcomes), 30, "writes to succeed again")

        cluster.restart("immediate")
        again_at = time.monotonic()
        _until(lambda: sum(o.status == 201 and o.at > again_at for w in writers
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
        _until(lambda: http.get(f"/api/executions/{job_id}").json()["execution"]["status"]
               == "completed", 30, "the job submitted after the restarts to complete")

        assert http.patch(f"/api/executions/{tail}", json={"status": "completed"}
                          ).status_code == 200
        stored = _event_ids(url, tail)
        _until(lambda: run_reader.ended, 30, "the run stream's end")
        got = run_reader.ids()
        assert got == stored, "the run stream lost or repeated events across the restarts"
        acked = {e for w in writers for e in w.acked}
        _until(lambda: acked <= list_reader.execution_ids(), 30, "every created run listed")
        list_reader.halt()
        listed = list_reader.ids()
        assert len(listed) == len(set(listed)) and listed == sorted(listed)

        # A client that was away since before the stop resumes from there.
        late = StreamReader(base, f"/api/executions/{tail}/stream", after=before_stop)
        late.start()
        _until(lambda: late.ended, 30, "the resumed run stream's end")
        assert late.ids() == [i for i in stored if i > before_stop]
    except BaseException:
        print(f"server log:\n{server.log()}\npostgres log:\n{cluster.log_tail()}")
        raise
    finally:
        http.close()
        server.stop()


def _event_ids(url: str, execution_id: str) -> list[int]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text(
                "SELECT id FROM execution_event WHERE execution_id = :e ORDER BY id"),
                {"e": execution_id})]
    finally:
        engine.dispose()


# -- 3. disk full, read-only ---------------------------------------------------

def _local(app: Any) -> TestClient:
    # A loopback peer and Host: with no token, only this machine is served.
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000",
                      client=("127.0.0.1", 50000))


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


def _big_batch(prefix: str, runs: int = 40) -> dict[str, Any]:
    # Bigger than any slack the WAL file has left: it must grow to take it.
    return {"executions": [{"id": f"{prefix}-{i}", "name": "big", "code": "y" * 100_000}
                           for i in range(runs)]}


def _otlp_body() -> dict[str, Any]:
    # 300 root spans of 1 KB names: too much for any slack (names may be cut).
    spans = [{"traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": "x" * 1000,
              "startTimeUnixNano": "1700000000000000000",
              "endTimeUnixNano": "1700000001000000000"} for _ in range(300)]
    return {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}


def _assert_refused(response: httpx.Response, code: str, *words: str) -> None:
    assert response.status_code == 503, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == code, error
    assert all(w in error["message"] for w in words), error["message"]
    assert int(response.headers["Retry-After"]) > 0


def _reads_work(client: TestClient, name: str) -> None:
    listed = client.get("/api/executions")
    assert listed.status_code == 200 and name in {e["name"] for e in listed.json()["executions"]}
    page = client.get("/")
    assert page.status_code == 200 and name in page.text
    assert client.get("/healthz").status_code == 200


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
        with _local(app) as client:
            assert client.post("/api/executions", json={"name": "before"}).status_code == 201
            if mounted:
                filler = _fill(folder)
            else:
                with app.state.store.db.write_engine.connect() as conn:
                    pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
                    conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
                    conn.commit()
            _assert_refused(client.post("/api/ingest", json=_big_batch("full")),
                            "storage_full", "disk is full", "free space")
            _assert_refused(client.post("/api/executions",
                                        json={"name": "big", "code": "z" * 900_000}),
                            "storage_full", "nothing was written")
            otlp = client.post("/v1/traces", json=_otlp_body())
            assert otlp.status_code == 503 and otlp.json()["code"] == 14, otlp.text
            assert "disk is full" in otlp.json()["message"] and "Retry-After" in otlp.headers
            _reads_work(client, "before")
            assert client.get("/api/executions/full-0").status_code == 404
            if mounted:
                filler.unlink()
            else:
                with app.state.store.db.write_engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA max_page_count = 1073741823")
                    conn.commit()
            assert client.post("/api/ingest", json=_big_batch("after", 5)).status_code == 200
            assert client.post("/api/executions", json={"name": "after"}).status_code == 201
        _integrity(f"sqlite:///{folder / 'runyard.db'}")
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
        with _local(create_app(Settings(database_url=url))) as client:
            assert client.post("/api/executions", json={"name": "before"}).status_code == 201
            real = real and _chattr("+i", *files)
            try:
                if real:
                    _assert_refused(client.post("/api/executions", json={"name": "no"}),
                                    "storage_unavailable", "could not be read or written")
                    _reads_work(client, "before")
                app = create_app(Settings(database_url=url))
                if not real:
                    _on_write_connect(app, "PRAGMA query_only=1")
                with _local(app) as fresh:
                    _assert_refused(fresh.post("/api/executions", json={"name": "no"}),
                                    "storage_read_only", "read-only", "writable again")
                    _assert_refused(fresh.post("/api/ingest", json=_big_batch("ro", 2)),
                                    "storage_read_only")
                    _reads_work(fresh, "before")
            finally:
                if real:
                    _chattr("-i", *files)
            assert client.post("/api/executions", json={"name": "after"}).status_code == 201
        _integrity(url)


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
        with _local(create_app(settings)) as client:
            assert client.post("/api/executions", json={"name": "before"}).status_code == 201
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        with _local(create_app(settings)) as client:
            _assert_refused(client.post("/api/executions", json={"name": "no"}),
                            "storage_read_only", "read-only")
            _assert_refused(client.post("/api/ingest", json=_big_batch("ro", 2)),
                            "storage_read_only")
            otlp = client.post("/v1/traces", json=_otlp_body())
            assert otlp.status_code == 503 and otlp.json()["code"] == 14
            _reads_work(client, "before")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
