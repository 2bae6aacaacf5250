"""The change feed over SSE against a real server: resume, fan-out, end of stream."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.db.engine import open_database
from app.run_command import SSE
from app.store import Store
from app.store.inputs import EventIn, EventsAppend, ExecutionCreate
from tests.servers import running_server, sse_messages

TOTAL_EVENTS = 5000
BATCH = 50

WRITER = """
import sys
from app.db.engine import open_database
from app.store import Store
from app.store.inputs import EventIn, EventsAppend, ExecutionPatch
store = Store(open_database(sys.argv[1]))
run_id, total, batch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for start in range(0, total, batch):
    store.append_events(run_id, EventsAppend(events=[
        EventIn(message=f"line {i}") for i in range(start, start + batch)]))
store.update_execution(run_id, ExecutionPatch(status="completed"))
store.db.dispose()
"""


def _write_over_http(base: str, run_id: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        for start in range(0, TOTAL_EVENTS, BATCH):
            r = http.post(f"/api/executions/{run_id}/events", json={"events": [
                {"message": f"line {i}"} for i in range(start, start + BATCH)]})
            assert r.status_code == 201, r.text
        assert http.patch(f"/api/executions/{run_id}",
                          json={"status": "completed"}).status_code == 200


def _read_with_cutoffs(base: str, run_id: str, seed: int) -> list[SSE]:
    """Read the run's stream to its end, hanging up at random points and resuming."""
    rng = random.Random(seed)
    got: list[SSE] = []
    last_id: str | None = None
    ended = False
    cuts = 0
    with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client:
        while not ended:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            budget = rng.randint(200, 1500) if cuts < 6 else 10**9
            for n, message in enumerate(
                    sse_messages(client, f"{base}/api/executions/{run_id}/stream", headers)):
                if message.event == "end":
                    ended = True
                    break
                got.append(message)
                last_id = message.id
                if n + 1 >= budget:
                    cuts += 1
                    break  # hang up mid-stream
    assert cuts >= 3, "the test must actually cut the connection several times"
    return got


def _check_exactly_once(got: list[SSE], store_url: str, run_id: str) -> None:
    ids = [int(m.id or 0) for m in got]
    assert ids == sorted(ids), "events arrive in order"
    assert len(ids) == len(set(ids)), "no event twice"
    store = Store(open_database(store_url))
    try:
        stored = store.feed_after(0, 100_000, run_id)
    finally:
        store.db.dispose()
    assert ids == [r["id"] for r in stored], "every event of the run, none missing"
    logs = [json.loads(m.data)["message"] for m in got if m.event == "log"]
    assert logs == [f"line {i}" for i in range(TOTAL_EVENTS)]


@pytest.mark.parametrize("writer", ["http", "second_process"])
def test_resume_after_cutoffs_loses_nothing(database_url: str, writer: str) -> None:
    with running_server(database_url) as base:
        r = httpx.post(f"{base}/api/executions", json={"id": "resume-1", "name": "resume"})
        assert r.status_code == 201
        if writer == "http":
            thread = threading.Thread(target=_write_over_http, args=(base, "resume-1"))
            thread.start()
            wait = thread.join
        else:
            proc = subprocess.Popen([sys.executable, "-c", WRITER, database_url, "resume-1",
                                     str(TOTAL_EVENTS), str(BATCH)])
            wait = lambda: proc.wait(120)  # noqa: E731
        got = _read_with_cutoffs(base, "resume-1", seed=len(writer))
        wait()
    _check_exactly_once(got, database_url, "resume-1")


def test_list_stream_sends_matching_rows_and_resumes(database_url: str) -> None:
    with running_server(database_url) as base, httpx.Client(timeout=30) as client:
        received: list[object] = []
        ready = threading.Event()

        def read() -> None:
            with client.stream("GET", f"{base}/api/stream?trigger=cli") as response:
                ready.set()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        received.append(json.loads(line[5:]))
                        # Quick successive changes may arrive as one message.
                        if received[-1]["status"] == "failed":  # type: ignore[index]
                            return

        reader = threading.Thread(target=read)
        reader.start()
        assert ready.wait(10)
        http = httpx.Client(base_url=base, timeout=10)
        http.post("/api/executions", json={"id": "a", "trigger_kind": "http"})
        http.post("/api/executions", json={"id": "b", "trigger_kind": "cli"})
        http.patch("/api/executions/b", json={"progress_pct": 50})
        http.patch("/api/executions/b", json={"status": "failed", "error": "boom"})
        reader.join(20)
        assert not reader.is_alive(), f"the final state never arrived: {received}"
        assert [(r["id"], r["status"]) for r in received][-1] == ("b", "failed")  # type: ignore[index]
        assert {r["id"] for r in received} == {"b"}  # type: ignore[index]
        # A fresh client resuming from 0 gets each matching run once, current state.
        backlog = []
        for m in sse_messages(client, f"{base}/api/stream?trigger=cli&after=0"):
            backlog.append(json.loads(m.data))
            break
        assert backlog[0]["id"] == "b" and backlog[0]["status"] == "failed"
        http.close()


def test_run_stream_of_an_ended_run_replays_then_ends(database_url: str) -> None:
    with running_server(database_url) as base, httpx.Client(timeout=10) as client:
        client.post(f"{base}/api/executions", json={"id": "done", "status": "completed"})
        messages = list(sse_messages(client, f"{base}/api/executions/done/stream"))
        assert [m.event for m in messages] == ["execution.created", "end"]
        assert client.get(f"{base}/api/executions/nope/stream").status_code == 404
        r = client.get(f"{base}/api/executions/done/stream", headers={"Last-Event-ID": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_parameter"


def test_run_stream_sends_every_event_of_the_ending_write_before_end(
        database_url: str) -> None:
    """One PATCH that ends a run and sets its progress and exit code writes
    three events; a client streaming live gets all three, then `end` (found by
    the soak bench: the stream used to stop at the status change)."""
    with running_server(database_url) as base, httpx.Client(timeout=10) as client, \
            httpx.Client(timeout=10) as writer:
        writer.post(f"{base}/api/executions", json={"id": "ending", "status": "running"})
        seen: list[SSE] = []
        for message in sse_messages(client, f"{base}/api/executions/ending/stream"):
            seen.append(message)
            if len(seen) == 1:  # the backlog is in: now the stream is live
                r = writer.patch(f"{base}/api/executions/ending", json={
                    "status": "completed", "progress_pct": 100, "exit_code": 0})
                assert r.status_code == 200, r.text
        stored = writer.get(f"{base}/api/executions/ending/events").json()["events"]
        assert len(stored) >= 3
        assert [m.event for m in seen] == [e["type"] for e in stored] + ["end"]
        assert [m.id for m in seen[:-1]] == [str(e["id"]) for e in stored]


@pytest.fixture
def postgres_url(pg_session_url: str) -> str:
    """The session's PostgreSQL database, emptied (PostgreSQL only: the race
    below exists only with sequences, whose ids can commit out of order)."""
    from tests.conftest import _empty_pg

    _empty_pg(pg_session_url)
    return pg_session_url


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["live", "replay"])
@pytest.mark.parametrize("round_", range(2))
def test_concurrent_postgres_writers_never_make_a_reader_miss_a_row(
        postgres_url: str, mode: str, round_: int) -> None:
    """8 connections commit in random order while a reader streams: a live reader
    (subscribed before the writes) and a replaying one (after=0, racing the
    writes from the table into live) both see every run."""
    per_writer, writers = 40, 8
    expected = {f"w{w}-{i}" for w in range(writers) for i in range(per_writer)}
    with running_server(postgres_url) as base:
        seen: set[str] = set()
        connected, done = threading.Event(), threading.Event()
        url = f"{base}/api/stream" + ("?after=0" if mode == "replay" else "")

        def read() -> None:
            with httpx.Client(timeout=60) as client, client.stream("GET", url) as response:
                # Headers arrive after the server has subscribed this client.
                connected.set()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        seen.add(json.loads(line[5:])["id"])
                        if expected <= seen:
                            done.set()
                            return

        reader = threading.Thread(target=read)
        reader.start()
        assert connected.wait(10)
        store = Store(open_database(postgres_url))
        try:
            def write(w: int) -> None:
                rng = random.Random(w * 10 + round_)
                for i in range(per_writer):
                    run, _ = store.create_execution(ExecutionCreate(id=f"w{w}-{i}"))
                    store.append_events(run["id"], EventsAppend(
                        events=[EventIn(message="x")] * rng.randint(1, 5)))

            with ThreadPoolExecutor(writers) as pool:
                for f in [pool.submit(write, w) for w in range(writers)]:
                    f.result()
        finally:
            store.db.dispose()
        assert done.wait(30), f"missed {len(expected - seen)} rows"
        reader.join(10)


def test_stream_ends_cleanly_when_the_server_stops_and_resumes_after_restart(
        database_url: str) -> None:
    with running_server(database_url) as base:
        httpx.post(f"{base}/api/executions", json={"id": "r1"})
        httpx.post(f"{base}/api/executions/r1/events",
                   json={"events": [{"message": str(i)} for i in range(10)]})
        got: list[SSE] = []
        ended = threading.Event()

        def read() -> None:
            with httpx.Client(timeout=30) as client:
                try:
                    for m in sse_messages(client, f"{base}/api/executions/r1/stream"):
                        got.append(m)
                except httpx.TransportError:
                    pass  # the server went away mid-stream: also an end
            ended.set()

        threading.Thread(target=read).start()
        while len(got) < 11:  # execution.created + 10 logs
            threading.Event().wait(0.05)
    # Leaving the block stopped the server: the open stream must not hang.
    assert ended.wait(15), "the stream was left hanging after shutdown"
    last_id = got[-1].id or ""
    with running_server(database_url) as base, httpx.Client(timeout=10) as client:
        client.post(f"{base}/api/executions/r1/events", json={"events": [{"message": "late"}]})
        client.patch(f"{base}/api/executions/r1", json={"status": "completed"})
        rest = list(sse_messages(client, f"{base}/api/executions/r1/stream",
                                 {"Last-Event-ID": last_id}))
    assert [m.event for m in rest] == ["log", "execution.status", "end"]
    assert json.loads(rest[0].data)["message"] == "late"
