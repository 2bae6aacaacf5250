"""Parts shared by the fault tests (``test_faults_crash``, ``test_faults_postgres``
and ``test_faults_storage``): ``runyard serve`` as a child process that a test
may SIGKILL, an SSE reader that resumes with ``Last-Event-ID`` as a browser
does, and the database checks, request bodies and answer checks that more
than one of them uses.

The ``server_log`` fixture is defined here as ``server_log_fixture``: each
test module that uses it imports it, so pytest finds it there.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine
from starlette.testclient import TestClient

from app.db.engine import normalize_url
from app.run_command import SSE, events
from tests.servers import free_port

# Fault tests hammer one server from several threads: no rate or stream cap.
SERVER_ENV = {"RUNYARD_RATE_LIMIT_PER_S": "0", "RUNYARD_MAX_STREAMS_PER_CLIENT": "0"}


def until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
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

        until(up, 60, "the server to answer /healthz", every=0.1)
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


# Named apart from the fixture so that a test's ``server_log`` argument does not
# shadow the import that makes pytest find it.
@pytest.fixture(name="server_log")
def server_log_fixture(tmp_path: Path) -> Path:
    """Where a ``Server`` writes its stderr, for the test to print on failure."""
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


# -- reading the database back --------------------------------------------

def engine_for(url: str) -> Engine:
    """An engine of its own on ``url``, to read what the server stored; dispose it."""
    return create_engine(normalize_url(url))


def integrity(url: str) -> None:
    """Assert a SQLite file passes ``PRAGMA integrity_check`` (other URLs: nothing)."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()


# -- the failing-database tests' requests and checks ----------------------

def local(app: Any) -> TestClient:
    """A test client for ``app`` that talks as this machine."""
    # A loopback peer and Host: with no token, only this machine is served.
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1:8000",
                      client=("127.0.0.1", 50000))


def big_batch(prefix: str, runs: int = 40) -> dict[str, Any]:
    """A bulk ingest body of ``runs`` runs of 100 KB each."""
    # Bigger than any slack the WAL file has left: it must grow to take it.
    return {"executions": [{"id": f"{prefix}-{i}", "name": "big", "code": "y" * 100_000}
                           for i in range(runs)]}


def otlp_body() -> dict[str, Any]:
    """An OTLP/JSON trace export body big enough to need new pages."""
    # 300 root spans of 1 KB names: too much for any slack (names may be cut).
    spans = [{"traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": "x" * 1000,
              "startTimeUnixNano": "1700000000000000000",
              "endTimeUnixNano": "1700000001000000000"} for _ in range(300)]
    return {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}


def assert_refused(response: httpx.Response, code: str, *words: str) -> None:
    """Assert a 503 with error ``code``, a message holding ``words`` and a Retry-After."""
    assert response.status_code == 503, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == code, error
    assert all(w in error["message"] for w in words), error["message"]
    assert int(response.headers["Retry-After"]) > 0


def reads_work(client: TestClient, name: str) -> None:
    """Assert the list, the page and /healthz answer, the list showing run ``name``."""
    listed = client.get("/api/executions")
    assert listed.status_code == 200 and name in {e["name"] for e in listed.json()["executions"]}
    page = client.get("/")
    assert page.status_code == 200 and name in page.text
    assert client.get("/healthz").status_code == 200
