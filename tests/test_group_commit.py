"""Group commit of the live writes and of OTLP exports: requests that arrive
together share one transaction, and each still gets its own answer
(``Store.write_each``, ``app.api.live_writes``, ``app.otlp.writer``). Checked
by what is in the database afterwards and by the commits the live layer hears
of (one per transaction)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from sqlalchemy import Connection
from starlette.testclient import TestClient

from app.api.live_writes import LiveWriter
from app.otlp.mapping import Trace, map_request
from app.otlp.writer import TraceWriter
from app.store import Store, writes
from app.store.errors import Invalid, NotFound
from app.store.feed import WriteLog
from app.store.inputs import (
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    InteractionAsk,
    ToolCallStart,
)
from tests.otlp_support import nested_trace

T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
LINE = EventsAppend.model_validate({"events": [{"message": "a line"}]})


@pytest.fixture
def heard(store: Store) -> Iterator[tuple[Store, list[WriteLog]]]:
    """A store over the same database whose commits are listed as the hub hears them."""
    commits: list[WriteLog] = []
    yield Store(store.db, on_commit=commits.append), commits


def snapshot(store: Store, execution_id: str) -> tuple[Any, ...]:
    return (store.get_execution(execution_id), store.tool_calls(execution_id),
            store.interactions(execution_id), store.events(execution_id, limit=1000))


def _boom(conn: Connection, log: WriteLog) -> None:
    raise RuntimeError("a bug in an operation")


# -- the store: several operations, one transaction ----------------------------------

def test_write_each_commits_a_group_once_and_a_refused_operation_alone(
        heard: tuple[Store, list[WriteLog]]) -> None:
    store, commits = heard
    store.create_execution(ExecutionCreate(id="r", started_at=T0))
    store.ask("r", InteractionAsk(id="q1", message="go?"))
    before = snapshot(store, "r")
    commits.clear()
    out = store.write_each([
        writes.create_execution(ExecutionCreate(id="a", name="first"), "default"),
        # Ending r cancels its question and appends events before the bad
        # completed_at is noticed: all of that must go, and only that.
        writes.update_execution("r", ExecutionPatch.model_validate(
            {"status": "completed", "completed_at": T0 - 1}), None),
        writes.append_events("a", LINE, None),
        writes.start_tool_call("missing", ToolCallStart(tool_path="fs.read"), None),
        writes.create_execution(ExecutionCreate(id="b"), "default"),
    ])
    assert [type(o).__name__ for o in out] == ["tuple", "Invalid", "list", "NotFound", "tuple"]
    assert out[0][0]["id"] == "a" and out[0][1] is True
    assert isinstance(out[1], Invalid) and isinstance(out[3], NotFound)
    assert out[3].code == "execution_not_found"
    assert [e["seq"] for e in out[2]] == [2]
    assert snapshot(store, "r") == before
    assert store.interactions("r")[0]["status"] == "pending"
    assert [e["type"] for e in store.events("a", limit=10)[0]] == ["execution.created", "log"]
    assert store.get_execution("b")[0]["id"] == "b"
    # One commit for the group; it names the runs written, not the refused one.
    assert len(commits) == 1
    assert commits[0].execution_ids == {"a", "b"}
    assert commits[0].last_event_id == store.last_event_id()


def test_write_each_rolls_everything_back_when_an_operation_fails_otherwise(
        heard: tuple[Store, list[WriteLog]]) -> None:
    store, commits = heard
    with pytest.raises(RuntimeError, match="a bug"):
        store.write_each([writes.create_execution(ExecutionCreate(id="a"), "default"),
                          _boom])
    with pytest.raises(NotFound):
        store.get_execution("a")
    assert commits == [] and store.last_event_id() == 0


def test_write_each_of_one_operation_answers_its_refusal(store: Store) -> None:
    [out] = store.write_each([writes.append_events("nope", LINE, None)])
    assert isinstance(out, NotFound) and out.detail == {"execution_id": "nope"}


# -- the live writer: concurrent requests grouped ---------------------------------

def test_requests_that_arrive_together_share_a_commit_and_get_their_own_answers(
        heard: tuple[Store, list[WriteLog]]) -> None:
    store, commits = heard

    async def main() -> list[Any]:
        writer = LiveWriter(store)
        ops = [writes.create_execution(ExecutionCreate(id=f"r{i}", name=f"run {i}"), "default")
               for i in range(6)]
        ops.insert(3, writes.append_events("nope", LINE, None))
        return await asyncio.gather(*(writer.submit(op) for op in ops),
                                    return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[3], NotFound) and out[3].detail == {"execution_id": "nope"}
    created = out[:3] + out[4:]
    assert [(obj["id"], obj["name"], new) for obj, new in created] == [
        (f"r{i}", f"run {i}", True) for i in range(6)]
    assert len(commits) == 1
    assert commits[0].execution_ids == {f"r{i}" for i in range(6)}


def test_a_bug_in_one_request_fails_it_alone(heard: tuple[Store, list[WriteLog]]) -> None:
    store, commits = heard

    async def main() -> list[Any]:
        writer = LiveWriter(store)
        ops = [writes.create_execution(ExecutionCreate(id="a"), "default"), _boom,
               writes.create_execution(ExecutionCreate(id="b"), "default")]
        return await asyncio.gather(*(writer.submit(op) for op in ops),
                                    return_exceptions=True)

    first, bug, last = asyncio.run(main())
    assert isinstance(bug, RuntimeError)
    assert first[0]["id"] == "a" and last[0]["id"] == "b"
    # The group failed as a whole, then each was written alone.
    assert [c.execution_ids for c in commits] == [{"a"}, {"b"}]


def test_a_request_whose_client_left_is_still_written(store: Store) -> None:
    async def main() -> None:
        writer = LiveWriter(store)
        gone = asyncio.create_task(writer.submit(
            writes.create_execution(ExecutionCreate(id="left"), "default")))
        await asyncio.sleep(0)          # queued, its group started
        gone.cancel()
        stays = await writer.submit(writes.append_events("left", LINE, None))
        assert [e["seq"] for e in stays] == [2]
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    assert [e["type"] for e in store.events("left", limit=10)[0]] == [
        "execution.created", "log"]


# -- OTLP exports: the same queue, spans of a trace merged ------------------------

def _traces(n: int) -> list[tuple[list[Trace], str]]:
    """``n`` real SDK traces (a root and 5 tool calls each), mapped as the route maps them."""
    out = []
    for _ in range(n):
        spans, trace_id = nested_trace(calls=5)
        out.append((map_request(encode_spans(spans)).traces, f"otel-{trace_id}"))
    return out


def test_exports_that_arrive_together_share_a_commit(
        heard: tuple[Store, list[WriteLog]]) -> None:
    store, commits = heard
    (a, a_id), (b, b_id), (c, c_id) = _traces(3)
    # A trace of another scope: its spans are refused, the rest of its group is not.
    store.write_traces(c, "other")
    commits.clear()

    async def main() -> list[int]:
        writer = TraceWriter(store)
        return list(await asyncio.gather(writer.write(a, "default"), writer.write(b, "default"),
                                         writer.write(c, "default")))

    assert asyncio.run(main()) == [0, 0, 7]   # c: its root, 5 calls and one nested span
    # One commit: the group's. A foreign trace in it, each request was then
    # written alone to count its own refusals, which changed nothing more.
    assert [c.execution_ids for c in commits] == [{a_id, b_id}]
    for run_id in (a_id, b_id):
        assert store.get_execution(run_id)[0]["tool_call_count"] == 6
    with pytest.raises(NotFound):
        store.get_execution(c_id, scope_id="default")


# -- through the API: many requests at once ----------------------------------------

def test_concurrent_api_writes_are_each_answered_as_alone(client: TestClient) -> None:
    def record(i: int) -> list[int]:
        run = f"run-{i}"
        codes = [client.post("/api/executions", json={"id": run, "name": run}).status_code]
        codes.append(client.post(f"/api/executions/{run}/events",
                                 json={"events": [{"message": f"line {i}"}]}).status_code)
        codes.append(client.patch(f"/api/executions/{run}",
                                  json={"status": "completed"}).status_code)
        # Not allowed after completed: refused alone, with its reason.
        late = client.patch(f"/api/executions/{run}", json={"status": "running"})
        assert late.json()["error"]["code"] == "invalid_transition", late.text
        return codes

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(record, range(24)))
    assert answers == [[201, 201, 200]] * 24
    listed = client.get("/api/executions?limit=100").json()["executions"]
    assert sorted(r["id"] for r in listed) == sorted(f"run-{i}" for i in range(24))
    assert {r["status"] for r in listed} == {"completed"}
    for i in (0, 23):
        events = client.get(f"/api/executions/run-{i}/events").json()["events"]
        assert [e["message"] for e in events if e["type"] == "log"] == [f"line {i}"]
