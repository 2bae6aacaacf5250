"""Writes through the store: status transitions, tool calls, interactions, events,
bulk ingest and scopes, each checked by what it leaves in the database and in the
change feed (every write appends its events in its own transaction)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from app.store import Store
from app.store.errors import Conflict, Invalid, NotFound
from app.store.feed import WriteLog
from app.store.inputs import (
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    InteractionAsk,
    InteractionResolve,
    ToolCallFinish,
    ToolCallStart,
    parse_ingest,
)
from app.store.params import parse_list_params
from app.times import format_ms, now_ms

T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
TERMINAL = ("completed", "failed", "cancelled", "timed_out")
NON_TERMINAL = ("pending", "queued", "running", "waiting_for_interaction")
STATUSES = NON_TERMINAL + TERMINAL


def events(store: Store, execution_id: str) -> list[dict[str, Any]]:
    rows, next_after = store.events(execution_id, limit=1000)
    assert next_after is None
    return rows


def types(store: Store, execution_id: str) -> list[str]:
    return [e["type"] for e in events(store, execution_id)]


def create(store: Store, **fields: Any) -> dict[str, Any]:
    row, created = store.create_execution(ExecutionCreate.model_validate(fields))
    assert created
    return row


def patch(store: Store, execution_id: str, **fields: Any) -> dict[str, Any]:
    return store.update_execution(execution_id, ExecutionPatch.model_validate(fields))


def snapshot(store: Store, execution_id: str) -> tuple[Any, ...]:
    """Everything stored about one execution."""
    return (store.get_execution(execution_id), store.tool_calls(execution_id),
            store.interactions(execution_id), events(store, execution_id))


# -- create ----------------------------------------------------------------------

def test_create_defaults_to_running_and_appends_its_event(store: Store) -> None:
    before = now_ms()
    row = create(store, name="sync", trigger_kind="cli", code="make sync",
                 labels={"env": "prod"}, trigger_meta={"argv": ["make"]})
    after = now_ms()
    assert len(row["id"]) == 26
    assert row["status"] == "running"
    assert format_ms(before) <= row["created_at"] <= format_ms(after)
    assert row["started_at"] == row["created_at"]
    assert (row["completed_at"], row["duration_ms"]) == (None, None)
    assert (row["tool_call_count"], row["had_elicitation"]) == (0, False)
    assert (row["error_count"], row["warn_count"], row["scope_id"]) == (0, 0, "default")
    assert (row["labels"], row["trigger_meta"]) == ({"env": "prod"}, {"argv": ["make"]})
    stored, pending = store.get_execution(row["id"])
    assert stored == row
    assert pending is None
    [event] = events(store, row["id"])
    assert (event["seq"], event["type"], event["level"], event["message"]) == (
        1, "execution.created", "info", "sync")
    assert event["data"] == {"status": "running"}
    assert event["ts"] == row["created_at"]


@pytest.mark.parametrize("status", ["pending", "queued"])
def test_a_run_that_has_not_begun_has_no_start(store: Store, status: str) -> None:
    row = create(store, status=status)
    assert (row["status"], row["started_at"], row["duration_ms"]) == (status, None, None)
    moved = patch(store, row["id"], status="running")
    assert moved["started_at"] is not None
    assert moved["started_at"] >= row["created_at"]


def test_create_with_supplied_times_derives_the_duration(store: Store) -> None:
    row = create(store, id="hist-1", status="failed", created_at=T0, started_at=T0 + 10,
                 completed_at=format_ms(T0 + 1_510), error="boom")
    assert (row["created_at"], row["started_at"], row["completed_at"]) == (
        format_ms(T0), format_ms(T0 + 10), format_ms(T0 + 1_510))
    assert row["duration_ms"] == 1_500
    with pytest.raises(Invalid) as err:
        create(store, id="hist-2", status="completed", started_at=T0 + 10, completed_at=T0)
    assert err.value.detail == {"path": ["completed_at"]}
    with pytest.raises(NotFound):
        store.get_execution("hist-2")


def test_create_again_is_a_retry_or_already_exists(store: Store) -> None:
    first = create(store, id="run-1", name="sync", trigger_kind="cli", code="x",
                   labels={"a": "1"})
    again, created = store.create_execution(ExecutionCreate(
        id="run-1", name="sync", trigger_kind="cli", code="x", labels={"b": "2"},
        status="completed"))
    assert created is False
    assert again == first                    # as it is now: the retry changed nothing
    assert store.get_execution("run-1")[0] == first
    for different in ({"name": "other"}, {"trigger_kind": "api"}, {"code": "y"}):
        fields = {"id": "run-1", "name": "sync", "trigger_kind": "cli", "code": "x"}
        with pytest.raises(Conflict) as err:
            store.create_execution(ExecutionCreate.model_validate({**fields, **different}))
        assert err.value.code == "already_exists"
        assert err.value.detail == {"execution_id": "run-1"}
    assert types(store, "run-1") == ["execution.created"]


# -- status transitions ------------------------------------------------------

@pytest.mark.parametrize("terminal", TERMINAL)
def test_terminal_is_final(store: Store, terminal: str) -> None:
    row = create(store, id="r", started_at=T0)
    ended = patch(store, "r", status=terminal, completed_at=T0 + 2_000)
    assert ended["status"] == terminal
    assert (ended["completed_at"], ended["duration_ms"]) == (format_ms(T0 + 2_000), 2_000)
    feed = events(store, "r")
    assert [e["type"] for e in feed] == ["execution.created", "execution.status"]
    assert feed[1]["data"] == {"from": "running", "to": terminal}
    assert feed[1]["seq"] == 2
    for other in STATUSES:
        if other == terminal:
            continue
        with pytest.raises(Conflict) as err:
            patch(store, "r", status=other)
        assert err.value.code == "invalid_transition"
        assert err.value.detail == {"from": terminal, "to": other}
    # The same status again is a no-op: nothing changes, nothing is appended.
    assert patch(store, "r", status=terminal) == ended
    assert store.get_execution("r")[0] == ended
    assert events(store, "r") == feed
    assert row["id"] == "r"


def test_a_terminal_run_still_takes_labels_and_events(store: Store) -> None:
    create(store, id="r", status="completed", created_at=T0, completed_at=T0 + 5)
    assert patch(store, "r", labels={"note": "checked"})["labels"] == {"note": "checked"}
    written = store.append_events("r", EventsAppend.model_validate(
        {"events": [{"message": "late line"}]}))
    assert [w["seq"] for w in written] == [3]
    assert types(store, "r") == ["execution.created", "execution.updated", "log"]


def test_non_terminal_statuses_move_freely(store: Store) -> None:
    for k, (src, dst) in enumerate(itertools.permutations(NON_TERMINAL, 2)):
        run_id = f"r{k}"
        create(store, id=run_id, status=src)
        moved = patch(store, run_id, status=dst)
        assert moved["status"] == dst
        assert moved["completed_at"] is None
        last = events(store, run_id)[-1]
        assert (last["type"], last["data"]) == ("execution.status", {"from": src, "to": dst})
        assert last["message"] == f"{src} → {dst}"


def test_patch_to_the_same_status_is_a_no_op(store: Store) -> None:
    row = create(store, id="r")
    assert patch(store, "r", status="running") == row
    assert patch(store, "r", name=None) == row         # unchanged fields too
    assert types(store, "r") == ["execution.created"]


def test_patch_fields_append_the_right_events(store: Store) -> None:
    create(store, id="r", labels={"a": "1", "keep": "k"})
    row = patch(store, "r", name="renamed", labels={"a": None, "b": "2"})
    assert (row["name"], row["labels"]) == ("renamed", {"keep": "k", "b": "2"})
    row = patch(store, "r", progress_pct=40, progress_stage="loading")
    assert (row["progress_pct"], row["progress_stage"]) == (40, "loading")
    row = patch(store, "r", labels=None, result={"rows": 3}, exit_code=0)
    assert (row["labels"], row["result"], row["exit_code"]) == (None, {"rows": 3}, 0)
    feed = events(store, "r")
    assert [e["type"] for e in feed] == [
        "execution.created", "execution.updated", "execution.progress", "execution.updated"]
    assert feed[1]["data"] == {"fields": ["labels", "name"]}
    assert feed[2]["data"] == {"pct": 40, "stage": "loading"}
    assert feed[3]["data"] == {"fields": ["exit_code", "labels", "result"]}
    assert [e["seq"] for e in feed] == [1, 2, 3, 4]
    assert store.get_execution("r")[0] == row


def test_unknown_execution_is_not_found_everywhere(store: Store) -> None:
    calls = [
        lambda: store.get_execution("nope"),
        lambda: patch(store, "nope", status="failed"),
        lambda: store.start_tool_call("nope", ToolCallStart(tool_path="fs.read")),
        lambda: store.finish_tool_call("nope", "t", ToolCallFinish()),
        lambda: store.tool_calls("nope"),
        lambda: store.ask("nope", InteractionAsk()),
        lambda: store.resolve("nope", "i", InteractionResolve(action="accept")),
        lambda: store.interactions("nope"),
        lambda: store.append_events("nope", EventsAppend.model_validate({"events": [{}]})),
        lambda: store.events("nope"),
    ]
    for call in calls:
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.code == "execution_not_found"
        assert err.value.detail == {"execution_id": "nope"}
    assert store.last_event_id() == 0


# -- one transaction per write -------------------------------------------------

def test_a_refused_write_leaves_nothing_behind(store: Store) -> None:
    create(store, id="r", started_at=T0)
    store.ask("r", InteractionAsk(id="q1", message="go?"))
    before = snapshot(store, "r")
    # Ending the run cancels its open question (and appends events for both)
    # before the bad completed_at is noticed: all of it must roll back.
    with pytest.raises(Invalid):
        patch(store, "r", status="completed", completed_at=T0 - 1)
    assert snapshot(store, "r") == before
    assert store.interactions("r")[0]["status"] == "pending"
    assert store.get_execution("r")[0]["status"] == "waiting_for_interaction"


def test_commit_callback_hears_of_each_write_once_committed(store: Store) -> None:
    heard: list[WriteLog] = []
    live = Store(store.db, on_commit=heard.append)
    row, _ = live.create_execution(ExecutionCreate(id="r"))
    assert len(heard) == 1
    assert heard[0].execution_ids == {"r"}
    assert heard[0].last_event_id == events(store, "r")[-1]["id"] == live.last_event_id()
    live.start_tool_call("r", ToolCallStart(tool_path="fs.read", status="completed"))
    assert heard[-1].last_event_id == events(store, "r")[-1]["id"]
    assert len(heard) == 2
    live.update_execution("r", ExecutionPatch(status="running"))     # no-op: nothing to tell
    with pytest.raises(Conflict):
        live.create_execution(ExecutionCreate(id="r", name="different"))
    assert len(heard) == 2
    assert row["id"] == "r"


def test_event_ids_grow_and_seq_is_per_execution(store: Store) -> None:
    create(store, id="a")
    create(store, id="b")
    one = EventsAppend.model_validate({"events": [{"message": "x"}]})
    for run_id in ("a", "b", "a", "a", "b"):
        store.append_events(run_id, one)
    a, b = events(store, "a"), events(store, "b")
    assert [e["seq"] for e in a] == [1, 2, 3, 4]
    assert [e["seq"] for e in b] == [1, 2, 3]
    ids = sorted(e["id"] for e in a + b)
    assert ids == list(range(ids[0], ids[0] + 7))
    assert [e["id"] for e in a] == sorted(e["id"] for e in a)
    assert store.last_event_id() == ids[-1]


# -- tool calls ------------------------------------------------------------------

def test_tool_calls_keep_count_namespace_and_duration(store: Store) -> None:
    create(store, id="r", started_at=T0)
    first, created = store.start_tool_call("r", ToolCallStart(
        id="t1", tool_path="github.issues.list", args={"repo": "x"}, started_at=T0 + 100))
    assert created
    assert (first["seq"], first["namespace"], first["status"]) == (1, "github", "running")
    assert (first["duration_ms"], first["completed_at"], first["args"]) == (
        None, None, {"repo": "x"})
    second, _ = store.start_tool_call("r", ToolCallStart(
        tool_path="bash", parent_id="t1", started_at=T0 + 150))
    assert (second["seq"], second["namespace"], second["parent_id"]) == (2, "bash", "t1")
    assert store.get_execution("r")[0]["tool_call_count"] == 2

    done = store.finish_tool_call("r", "t1", ToolCallFinish(
        result=[1, 2], completed_at=T0 + 350))
    assert (done["status"], done["duration_ms"], done["result"]) == ("completed", 250, [1, 2])
    assert store.tool_calls("r")[0] == done
    assert [c["id"] for c in store.tool_calls("r")] == ["t1", second["id"]]

    feed = events(store, "r")
    assert [e["type"] for e in feed] == [
        "execution.created", "tool_call.started", "tool_call.started", "tool_call.finished"]
    assert feed[1]["data"] == {"tool_call_id": "t1", "tool_path": "github.issues.list",
                               "seq": 1, "parent_id": None}
    assert feed[1]["ts"] == format_ms(T0 + 100)
    assert feed[3]["data"] == {"tool_call_id": "t1", "tool_path": "github.issues.list",
                               "status": "completed", "duration_ms": 250}

    # Finishing again the same way is a no-op; another way is a 409.
    assert store.finish_tool_call("r", "t1", ToolCallFinish(completed_at=T0 + 999)) == done
    with pytest.raises(Conflict) as err:
        store.finish_tool_call("r", "t1", ToolCallFinish(status="failed"))
    assert err.value.code == "invalid_transition"
    assert len(events(store, "r")) == 4


def test_tool_call_retries_conflicts_and_bad_references(store: Store) -> None:
    create(store, id="r")
    create(store, id="s")
    call, _ = store.start_tool_call("r", ToolCallStart(id="t1", tool_path="fs.read"))
    again, created = store.start_tool_call("r", ToolCallStart(id="t1", tool_path="fs.read"))
    assert (again, created) == (call, False)
    for where, path in (("r", "fs.write"), ("s", "fs.read")):
        with pytest.raises(Conflict) as err:
            store.start_tool_call(where, ToolCallStart(id="t1", tool_path=path))
        assert err.value.code == "already_exists"
    with pytest.raises(Invalid) as bad:
        store.start_tool_call("r", ToolCallStart(tool_path="fs.read", parent_id="nope"))
    assert bad.value.detail == {"path": ["parent_id"]}
    with pytest.raises(NotFound) as missing:
        store.finish_tool_call("r", "nope", ToolCallFinish())
    assert missing.value.code == "tool_call_not_found"
    with pytest.raises(NotFound):
        store.finish_tool_call("s", "t1", ToolCallFinish())     # t1 belongs to r
    assert store.get_execution("r")[0]["tool_call_count"] == 1
    assert types(store, "r") == ["execution.created", "tool_call.started"]
    assert types(store, "s") == ["execution.created"]


def test_a_tool_call_recorded_already_finished(store: Store) -> None:
    create(store, id="r")
    call, _ = store.start_tool_call("r", ToolCallStart(
        tool_path="http.get", status="failed", error="503", started_at=T0,
        completed_at=T0 + 40))
    assert (call["status"], call["duration_ms"], call["error"]) == ("failed", 40, "503")
    assert types(store, "r")[1:] == ["tool_call.started", "tool_call.finished"]
    with pytest.raises(Invalid):
        store.start_tool_call("r", ToolCallStart(
            tool_path="http.get", status="completed", started_at=T0, completed_at=T0 - 1))
    assert store.get_execution("r")[0]["tool_call_count"] == 1


# -- interactions ----------------------------------------------------------------

def test_ask_and_resolve_move_the_run(store: Store) -> None:
    create(store, id="r")
    q1, created = store.ask("r", InteractionAsk(id="q1", message="Deploy?",
                                                request={"schema": {}}))
    assert created
    assert (q1["status"], q1["kind"], q1["action"], q1["resolved_at"]) == (
        "pending", "elicitation", None, None)
    run, pending = store.get_execution("r")
    assert (run["status"], run["had_elicitation"]) == ("waiting_for_interaction", True)
    assert pending == q1
    q2, _ = store.ask("r", InteractionAsk(id="q2", kind="approval",
                                          created_at=T0 + 10**12))
    assert store.get_execution("r")[1] == q1          # the oldest pending one

    answered = store.resolve("r", "q1", InteractionResolve(action="accept",
                                                           response={"ok": True}))
    assert (answered["status"], answered["action"], answered["response"]) == (
        "resolved", "accept", {"ok": True})
    assert answered["resolved_at"] is not None
    assert store.get_execution("r")[0]["status"] == "waiting_for_interaction"
    assert store.get_execution("r")[1] == q2
    declined = store.resolve("r", "q2", InteractionResolve(action="decline"))
    assert declined["status"] == "resolved"
    assert store.get_execution("r") == (store.get_execution("r")[0], None)
    assert store.get_execution("r")[0]["status"] == "running"

    feed = events(store, "r")
    assert [e["type"] for e in feed] == [
        "execution.created", "interaction.requested", "execution.status",
        "interaction.requested", "interaction.resolved", "interaction.resolved",
        "execution.status"]
    assert feed[2]["data"] == {"from": "running", "to": "waiting_for_interaction"}
    assert feed[4]["data"] == {"interaction_id": "q1", "action": "accept",
                               "status": "resolved"}
    assert feed[6]["data"] == {"from": "waiting_for_interaction", "to": "running"}
    assert [i["id"] for i in store.interactions("r")] == ["q1", "q2"]

    # Answering again the same way is a no-op; another way is a 409.
    assert store.resolve("r", "q1", InteractionResolve(action="accept")) == answered
    with pytest.raises(Conflict) as err:
        store.resolve("r", "q1", InteractionResolve(action="decline"))
    assert err.value.code == "invalid_transition"
    with pytest.raises(NotFound) as missing:
        store.resolve("r", "q9", InteractionResolve(action="accept"))
    assert missing.value.code == "interaction_not_found"
    assert len(events(store, "r")) == 7


def test_a_cancelled_answer_and_a_retried_question(store: Store) -> None:
    create(store, id="r", status="queued")
    q, _ = store.ask("r", InteractionAsk(id="q", kind="approval"))
    again, created = store.ask("r", InteractionAsk(id="q", kind="approval"))
    assert (again, created) == (q, False)
    with pytest.raises(Conflict) as err:
        store.ask("r", InteractionAsk(id="q", kind="elicitation"))
    assert err.value.code == "already_exists"
    cancelled = store.resolve("r", "q", InteractionResolve(action="cancel"))
    assert (cancelled["status"], cancelled["action"]) == ("cancelled", "cancel")
    assert store.get_execution("r")[0]["status"] == "running"
    assert types(store, "r").count("interaction.requested") == 1


def test_asking_a_finished_run_is_409(store: Store) -> None:
    create(store, id="r", status="completed")
    with pytest.raises(Conflict) as err:
        store.ask("r", InteractionAsk(message="too late"))
    assert err.value.code == "invalid_transition"
    assert store.interactions("r") == []
    run = store.get_execution("r")[0]
    assert (run["status"], run["had_elicitation"]) == ("completed", False)
    assert types(store, "r") == ["execution.created"]


def test_ending_a_run_cancels_its_open_questions(store: Store) -> None:
    create(store, id="r")
    store.ask("r", InteractionAsk(id="q", kind="approval"))
    patch(store, "r", status="failed", error="gave up")
    [q] = store.interactions("r")
    assert (q["status"], q["action"]) == ("cancelled", "cancel")
    assert q["resolved_at"] is not None
    feed = events(store, "r")
    assert [e["type"] for e in feed][-3:] == [
        "interaction.resolved", "execution.status", "execution.updated"]
    assert feed[-3]["data"] == {"interaction_id": "q", "action": "cancel",
                                "status": "cancelled"}
    with pytest.raises(Conflict):
        store.resolve("r", "q", InteractionResolve(action="accept"))
    run = store.get_execution("r")
    assert (run[0]["status"], run[0]["had_elicitation"], run[1]) == ("failed", True, None)
    # An approval counts as an elicitation in the list filter.
    listed = store.list_executions(parse_list_params([("elicitation", "true")]))
    assert [r["id"] for r in listed["executions"]] == ["r"]


# -- events ----------------------------------------------------------------------

def test_appended_events_count_levels_and_page_by_seq(store: Store) -> None:
    create(store, id="r")
    batch = EventsAppend.model_validate({"events": [
        {"message": "hello", "type": "stdout", "ts": T0},
        {"level": "warn", "message": "slow"},
        {"level": "error", "message": "bad", "data": {"code": 7}},
        {"level": "error", "type": "stderr", "message": "worse"},
        {"type": "artifact", "data": {"path": "out.csv"}},
    ]})
    written = store.append_events("r", batch)
    assert [w["seq"] for w in written] == [2, 3, 4, 5, 6]
    assert [w["id"] for w in written] == sorted(w["id"] for w in written)
    run = store.get_execution("r")[0]
    assert (run["error_count"], run["warn_count"]) == (2, 1)
    feed = events(store, "r")
    assert feed[1] == {"id": written[0]["id"], "execution_id": "r", "seq": 2,
                       "ts": format_ms(T0), "level": "info", "type": "stdout",
                       "message": "hello", "data": None}
    assert feed[3]["data"] == {"code": 7}

    page, next_after = store.events("r", after_seq=1, limit=2)
    assert ([e["seq"] for e in page], next_after) == ([2, 3], 3)
    page, next_after = store.events("r", after_seq=3, limit=3)
    assert ([e["seq"] for e in page], next_after) == ([4, 5, 6], None)
    errors, _ = store.events("r", levels=("error",))
    assert [e["message"] for e in errors] == ["bad", "worse"]
    outputs, _ = store.events("r", types=("stdout", "stderr"))
    assert [e["seq"] for e in outputs] == [2, 5]


# -- bulk ingest -----------------------------------------------------------------

def _batch() -> dict[str, Any]:
    return parse_ingest({"executions": [
        {"id": "h1", "name": "import", "status": "completed", "trigger_kind": "otel",
         "created_at": T0, "started_at": T0 + 5, "completed_at": T0 + 1_005,
         "labels": {"env": "prod"},
         "tool_calls": [
             {"id": "h1-t1", "tool_path": "github.pulls.get", "started_at": T0 + 10,
              "completed_at": T0 + 60},
             {"tool_path": "slack.chat.post", "started_at": T0 + 70},
             {"id": "h1-t3", "tool_path": "fs", "status": "failed", "started_at": T0 + 80,
              "completed_at": T0 + 80}],
         "interactions": [{"id": "h1-q", "kind": "approval", "status": "pending"}],
         "events": [{"level": "warn", "message": "w"}, {"level": "error", "message": "e",
                                                          "ts": T0 + 7},
                    {"type": "execution.progress", "level": "error", "data": {"pct": 50}}]},
        {"id": "h2", "status": "queued", "created_at": T0 + 1},
        {"id": "h1", "name": "a duplicate in the same batch", "created_at": T0 + 2},
    ]})


def test_ingest_derives_fields_and_stores_as_given(store: Store) -> None:
    counts = store.ingest(_batch(), scope_id="imports")
    assert counts == {"executions": 2, "tool_calls": 3, "interactions": 1, "events": 5}
    run, pending = store.get_execution("h1")
    # Stored as given: a completed run with a pending question stays completed.
    assert (run["status"], run["name"], run["scope_id"]) == ("completed", "import", "imports")
    assert (run["tool_call_count"], run["had_elicitation"]) == (3, True)
    assert (run["error_count"], run["warn_count"], run["duration_ms"]) == (2, 1, 1_000)
    assert pending is not None and pending["id"] == "h1-q"
    calls = store.tool_calls("h1")
    assert [(c["seq"], c["namespace"], c["status"], c["duration_ms"]) for c in calls] == [
        (1, "github", "completed", 50), (2, "slack", "running", None),
        (3, "fs", "failed", 0)]
    assert calls[1]["id"]                      # given one when none was supplied
    feed = events(store, "h1")
    assert [(e["seq"], e["type"], e["level"]) for e in feed] == [
        (1, "execution.created", "info"), (2, "log", "warn"), (3, "log", "error"),
        (4, "execution.progress", "error")]
    assert feed[0]["data"] == {"status": "completed"}
    assert feed[1]["ts"] == format_ms(T0)      # no ts: the run's creation time
    assert feed[2]["ts"] == format_ms(T0 + 7)
    other = store.get_execution("h2")[0]
    assert (other["started_at"], other["duration_ms"], other["tool_call_count"]) == (
        None, None, 0)
    assert types(store, "h2") == ["execution.created"]


def test_the_same_batch_again_changes_nothing(store: Store) -> None:
    store.ingest(_batch())
    before = [snapshot(store, i) for i in ("h1", "h2")], store.last_event_id()
    assert store.ingest(_batch()) == {
        "executions": 0, "tool_calls": 0, "interactions": 0, "events": 0}
    assert ([snapshot(store, i) for i in ("h1", "h2")], store.last_event_id()) == before
    # A live write to an ingested run then works as usual.
    store.resolve("h1", "h1-q", InteractionResolve(action="accept"))
    assert events(store, "h1")[-1]["seq"] == 5


def test_ingest_skips_runs_that_exist_and_refuses_taken_part_ids(store: Store) -> None:
    create(store, id="h2", name="live")
    create(store, id="x")
    store.start_tool_call("x", ToolCallStart(id="h1-t1", tool_path="fs.read"))
    before = store.last_event_id()
    with pytest.raises(Conflict) as err:
        store.ingest(_batch())
    assert err.value.code == "already_exists"
    # One transaction: nothing of the batch was written.
    with pytest.raises(NotFound):
        store.get_execution("h1")
    assert store.last_event_id() == before
    assert store.get_execution("h2")[0]["name"] == "live"
    assert store.ingest(parse_ingest({"executions": []}))["executions"] == 0


# -- scopes ----------------------------------------------------------------------

def test_scopes_separate_lists_and_ids(store: Store) -> None:
    store.create_execution(ExecutionCreate(id="a1", name="n", created_at=T0), scope_id="a")
    store.create_execution(ExecutionCreate(id="b1", name="n", created_at=T0 + 1),
                           scope_id="b")
    store.ingest(parse_ingest({"executions": [
        {"id": "b2", "created_at": T0 + 2, "status": "failed"}]}), scope_id="b")

    def listed(scope: str | None) -> tuple[list[str], int]:
        body = store.list_executions(parse_list_params([], scope_id=scope))
        return [r["id"] for r in body["executions"]], body["meta"]["total"]

    assert listed("a") == (["a1"], 1)
    assert listed("b") == (["b2", "b1"], 2)
    assert listed("c") == ([], 0)
    assert listed(None) == (["b2", "b1", "a1"], 3)
    facets = store.list_meta(parse_list_params([], scope_id="b"))["facets"]
    assert {f["value"]: f["count"] for f in facets["status"]}["failed"] == 1
    # An id is global: the same id from another scope is not a retry of this one.
    with pytest.raises(Conflict) as err:
        store.create_execution(ExecutionCreate(id="a1", name="n"), scope_id="b")
    assert err.value.code == "already_exists"
    assert store.get_execution("a1")[0]["scope_id"] == "a"
