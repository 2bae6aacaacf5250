"""The Record routes of the JSON API: creates, retries, PATCHes, tool calls,
interactions, events and bulk ingest, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.times import format_ms, now_ms
from tests.api_support import error_of

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EXECUTION_FIELDS = {
    "id", "scope_id", "name", "status", "trigger_kind", "trigger_meta", "code", "result",
    "error", "exit_code", "progress_pct", "progress_stage", "tool_call_count",
    "had_elicitation", "error_count", "warn_count", "labels", "created_at", "started_at",
    "completed_at", "duration_ms", "updated_at", "rerun_of",
}
TOOL_CALL_FIELDS = {
    "id", "execution_id", "parent_id", "seq", "tool_path", "namespace", "status", "args",
    "result", "error", "started_at", "completed_at", "duration_ms",
}
INTERACTION_FIELDS = {
    "id", "execution_id", "kind", "status", "message", "request", "action", "response",
    "created_at", "resolved_at",
}
EVENT_FIELDS = {"id", "execution_id", "seq", "ts", "level", "type", "message", "data"}



def create(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/api/executions", json=body)
    assert r.status_code == 201, r.text
    execution: dict[str, Any] = r.json()["execution"]
    return execution


def events(client: TestClient, execution_id: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/api/executions/{execution_id}/events", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["events"]
    return rows


def types_of(client: TestClient, execution_id: str) -> list[str]:
    return [e["type"] for e in events(client, execution_id)]


# -- executions ---------------------------------------------------------------

def test_create_answers_201_with_the_wrapped_execution(client: TestClient) -> None:
    r = client.post("/api/executions", json={
        "id": "run-1", "name": "nightly sync", "trigger_kind": "cron", "code": "sync()",
        "trigger_meta": {"schedule": "0 3 * * *"}, "labels": {"env": "prod"},
    })
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"execution"}
    x = r.json()["execution"]
    assert set(x) == EXECUTION_FIELDS
    assert (x["id"], x["name"], x["trigger_kind"], x["code"]) == (
        "run-1", "nightly sync", "cron", "sync()")
    assert x["trigger_meta"] == {"schedule": "0 3 * * *"}
    assert x["labels"] == {"env": "prod"}
    assert x["status"] == "running"
    assert x["scope_id"] == "default"
    # A create without a status is running, started at its creation.
    assert x["started_at"] == x["created_at"]
    assert x["completed_at"] is None and x["duration_ms"] is None
    assert (x["tool_call_count"], x["had_elicitation"], x["error_count"], x["warn_count"]) == (
        0, False, 0, 0)
    for name in ("created_at", "started_at", "updated_at"):
        assert TIME.match(x[name]), x[name]
    assert client.get("/api/executions/run-1").json() == {
        "execution": x, "pending_interaction": None}
    [created] = events(client, "run-1")
    assert (created["type"], created["seq"], created["data"]) == (
        "execution.created", 1, {"status": "running"})


def test_create_without_an_id_gets_a_time_sortable_one(client: TestClient) -> None:
    first = create(client, name="a")
    second = create(client, name="b", created_at=now_ms() + 5)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", first["id"])
    assert first["id"] < second["id"]


def test_create_accepts_rfc3339_and_epoch_ms_and_answers_utc_milliseconds(
        client: TestClient) -> None:
    x = create(client, id="old", status="completed",
               created_at="2026-11-21T12:00:00.123+02:00",   # an offset, normalized to UTC
               started_at=1795255200500,                      # epoch ms as a number
               completed_at="1795255201750")                  # epoch ms as a string
    assert x["created_at"] == "2026-11-21T10:00:00.123Z"
    assert x["started_at"] == format_ms(1795255200500) == "2026-11-21T10:00:00.500Z"
    assert x["completed_at"] == "2026-11-21T10:00:01.750Z"
    assert x["duration_ms"] == 1250
    assert TIME.match(x["updated_at"])


def test_create_with_a_terminal_status_completes_it(client: TestClient) -> None:
    x = create(client, id="done", status="failed", error="boom", exit_code=2,
               started_at="2026-11-21T10:00:00Z")
    assert x["status"] == "failed"
    assert x["completed_at"] is not None and x["duration_ms"] is not None
    assert x["duration_ms"] >= 0
    assert (x["error"], x["exit_code"]) == ("boom", 2)


def test_create_pending_has_not_started(client: TestClient) -> None:
    x = create(client, id="p", status="pending")
    assert x["started_at"] is None
    r = client.patch("/api/executions/p", json={"status": "running"})
    assert r.status_code == 200, r.text
    assert TIME.match(r.json()["execution"]["started_at"])


def test_a_retried_create_answers_200_and_changes_nothing(client: TestClient) -> None:
    first = create(client, id="r", name="job", trigger_kind="cli", code="x", labels={"a": "1"})
    r = client.post("/api/executions", json={
        "id": "r", "name": "job", "trigger_kind": "cli", "code": "x",
        "status": "completed", "labels": {"a": "2"}, "result": {"ignored": True}})
    assert r.status_code == 200, r.text
    assert r.json() == {"execution": first}
    assert types_of(client, "r") == ["execution.created"]


def test_a_retry_answers_the_execution_as_it_is_now(client: TestClient) -> None:
    create(client, id="r", name="job")
    client.patch("/api/executions/r", json={"status": "completed"})
    r = client.post("/api/executions", json={"id": "r", "name": "job"})
    assert r.status_code == 200
    assert r.json()["execution"]["status"] == "completed"


@pytest.mark.parametrize("change", [{"name": "other"}, {"trigger_kind": "api"}, {"code": "y"}])
def test_the_same_id_with_another_identity_is_409(client: TestClient,
                                                  change: dict[str, str]) -> None:
    create(client, id="r", name="job", trigger_kind="cli", code="x")
    body = {"id": "r", "name": "job", "trigger_kind": "cli", "code": "x", **change}
    error = error_of(client.post("/api/executions", json=body), 409, "already_exists")
    assert error["detail"] == {"execution_id": "r"}
    assert "r" in error["message"]
    assert client.get("/api/executions/r").json()["execution"]["name"] == "job"


@pytest.mark.parametrize(("body", "path"), [
    ({"status": "done"}, ["status"]),
    ({"name": 5}, ["name"]),
    ({"id": ""}, ["id"]),
    ({"id": "-starts-with-dash"}, ["id"]),
    ({"id": "x" * 129}, ["id"]),
    ({"id": "ünïcode"}, ["id"]),
    ({"labels": {"env": 1}}, ["labels", "env"]),
    ({"labels": ["env"]}, ["labels"]),
    ({"labels": {str(i): "v" for i in range(65)}}, ["labels"]),
    ({"created_at": "yesterday"}, ["created_at"]),
    ({"created_at": -1}, ["created_at"]),
    ({"started_at": "10000-01-01T00:00:00Z"}, ["started_at"]),
    ({"progress_pct": 100.5}, ["progress_pct"]),
    ({"exit_code": 2**31}, ["exit_code"]),
    ({"exit_code": 1.5}, ["exit_code"]),
    ({"bogus": 1}, ["bogus"]),
    ({"rerun_of": "has space"}, ["rerun_of"]),
    ({"status": "completed", "started_at": 2000, "completed_at": 1000}, ["completed_at"]),
])
def test_create_rejects_bad_fields_with_their_path(client: TestClient, body: dict[str, Any],
                                                   path: list[Any]) -> None:
    error = error_of(client.post("/api/executions", json=body), 422, "invalid_body")
    assert error["detail"]["path"] == path
    assert str(path[0]) in error["message"]
    assert client.get("/api/executions", params={"meta": "false"}).json()["executions"] == []


def test_create_names_every_failing_field(client: TestClient) -> None:
    error = error_of(client.post("/api/executions", json={"status": 1, "name": 2}), 422,
                     "invalid_body")
    paths = [e["path"] for e in error["detail"]["errors"]]
    assert ["status"] in paths and ["name"] in paths


def test_patch_changes_status_and_appends_its_event(client: TestClient) -> None:
    create(client, id="x")
    r = client.patch("/api/executions/x", json={"status": "completed", "result": {"n": 3},
                                                "exit_code": 0})
    assert r.status_code == 200, r.text
    x = r.json()["execution"]
    assert set(r.json()) == {"execution"}
    assert (x["status"], x["result"], x["exit_code"]) == ("completed", {"n": 3}, 0)
    assert TIME.match(x["completed_at"]) and x["duration_ms"] >= 0
    assert client.get("/api/executions/x").json()["execution"] == x
    status_events = [e for e in events(client, "x") if e["type"] == "execution.status"]
    assert [e["data"] for e in status_events] == [{"from": "running", "to": "completed"}]
    assert "execution.updated" in types_of(client, "x")


def test_patch_progress_and_labels(client: TestClient) -> None:
    create(client, id="x", labels={"keep": "1", "drop": "2"})
    r = client.patch("/api/executions/x", json={
        "progress_pct": 40, "progress_stage": "loading",
        "labels": {"drop": None, "new": "3"}})
    x = r.json()["execution"]
    assert (x["progress_pct"], x["progress_stage"]) == (40, "loading")
    assert x["labels"] == {"keep": "1", "new": "3"}
    progress = [e for e in events(client, "x") if e["type"] == "execution.progress"]
    assert [e["data"] for e in progress] == [{"pct": 40, "stage": "loading"}]
    r = client.patch("/api/executions/x", json={"labels": None})
    assert r.json()["execution"]["labels"] is None


def test_patch_to_the_same_status_is_a_no_op(client: TestClient) -> None:
    create(client, id="x")
    client.patch("/api/executions/x", json={"status": "failed"})
    before = client.get("/api/executions/x").json()["execution"]
    n_events = len(events(client, "x"))
    r = client.patch("/api/executions/x", json={"status": "failed"})
    assert r.status_code == 200
    assert r.json() == {"execution": before}
    assert len(events(client, "x")) == n_events


@pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled", "timed_out"])
def test_a_terminal_execution_never_changes_status(client: TestClient, terminal: str) -> None:
    create(client, id="x")
    assert client.patch("/api/executions/x", json={"status": terminal}).status_code == 200
    error = error_of(client.patch("/api/executions/x", json={"status": "running"}), 409,
                     "invalid_transition")
    assert error["detail"] == {"from": terminal, "to": "running"}
    assert client.get("/api/executions/x").json()["execution"]["status"] == terminal


def test_patch_rejects_bad_fields_with_their_path(client: TestClient) -> None:
    create(client, id="x", started_at="2026-11-21T10:00:00Z")
    error = error_of(client.patch("/api/executions/x", json={"status": "finished"}), 422,
                     "invalid_body")
    assert error["detail"]["path"] == ["status"]
    error = error_of(client.patch("/api/executions/x", json={"labels": {"k": 5}}), 422,
                     "invalid_body")
    assert error["detail"]["path"] == ["labels", "k"]
    error = error_of(client.patch("/api/executions/x", json={"id": "y"}), 422, "invalid_body")
    assert error["detail"]["path"] == ["id"]
    error = error_of(client.patch("/api/executions/x", json={
        "completed_at": "2026-11-21T09:00:00Z"}), 422, "invalid_body")
    assert error["detail"]["path"] == ["completed_at"]
    assert client.get("/api/executions/x").json()["execution"]["completed_at"] is None


# -- 404s ---------------------------------------------------------------------

UNKNOWN_EXECUTION_ROUTES = [
    ("GET", "/api/executions/nope", None),
    ("PATCH", "/api/executions/nope", {"status": "completed"}),
    ("GET", "/api/executions/nope/tool-calls", None),
    ("POST", "/api/executions/nope/tool-calls", {"tool_path": "a.b"}),
    ("PATCH", "/api/executions/nope/tool-calls/t1", {"status": "completed"}),
    ("GET", "/api/executions/nope/interactions", None),
    ("POST", "/api/executions/nope/interactions", {"message": "ok?"}),
    ("POST", "/api/executions/nope/interactions/i1/resolve", {"action": "accept"}),
    ("GET", "/api/executions/nope/events", None),
    ("POST", "/api/executions/nope/events", {"events": [{"message": "hi"}]}),
]


@pytest.mark.parametrize(("method", "path", "body"), UNKNOWN_EXECUTION_ROUTES)
def test_every_route_about_an_unknown_execution_is_404(
        client: TestClient, method: str, path: str, body: dict[str, Any] | None) -> None:
    create(client, id="other")
    error = error_of(client.request(method, path, json=body), 404, "execution_not_found")
    assert error["detail"] == {"execution_id": "nope"}
    assert "'nope'" in error["message"]
    # Nothing was written anywhere.
    assert types_of(client, "other") == ["execution.created"]


# -- tool calls ---------------------------------------------------------------

def test_tool_calls_start_finish_and_list_in_seq_order(client: TestClient) -> None:
    create(client, id="x")
    r = client.post("/api/executions/x/tool-calls", json={
        "id": "t1", "tool_path": "github.issues.list", "args": {"repo": "a/b"}})
    assert r.status_code == 201, r.text
    t1 = r.json()["tool_call"]
    assert set(t1) == TOOL_CALL_FIELDS
    assert (t1["id"], t1["execution_id"], t1["seq"], t1["namespace"], t1["status"]) == (
        "t1", "x", 1, "github", "running")
    assert t1["args"] == {"repo": "a/b"}
    assert TIME.match(t1["started_at"]) and t1["completed_at"] is None
    r = client.post("/api/executions/x/tool-calls", json={
        "tool_path": "http", "parent_id": "t1",
        "started_at": "2026-11-21T10:00:00Z", "completed_at": "2026-11-21T10:00:02.5Z",
        "status": "failed", "error": "timeout"})
    assert r.status_code == 201, r.text
    t2 = r.json()["tool_call"]
    assert (t2["seq"], t2["namespace"], t2["parent_id"], t2["status"]) == (2, "http", "t1",
                                                                           "failed")
    assert t2["duration_ms"] == 2500
    r = client.patch("/api/executions/x/tool-calls/t1", json={"result": [1, 2]})
    assert r.status_code == 200, r.text
    done = r.json()["tool_call"]
    assert (done["status"], done["result"]) == ("completed", [1, 2])
    assert TIME.match(done["completed_at"]) and done["duration_ms"] >= 0

    listed = client.get("/api/executions/x/tool-calls").json()
    assert listed == {"tool_calls": [done, t2]}
    assert client.get("/api/executions/x").json()["execution"]["tool_call_count"] == 2
    assert types_of(client, "x") == [
        "execution.created", "tool_call.started", "tool_call.started", "tool_call.finished",
        "tool_call.finished"]
    finished = [e for e in events(client, "x") if e["type"] == "tool_call.finished"]
    assert finished[-1]["data"]["tool_call_id"] == "t1"


def test_tool_call_retries_conflicts_and_transitions(client: TestClient) -> None:
    create(client, id="x")
    first = client.post("/api/executions/x/tool-calls",
                        json={"id": "t1", "tool_path": "a.b"}).json()["tool_call"]
    r = client.post("/api/executions/x/tool-calls", json={"id": "t1", "tool_path": "a.b"})
    assert r.status_code == 200
    assert r.json() == {"tool_call": first}
    error = error_of(client.post("/api/executions/x/tool-calls",
                                 json={"id": "t1", "tool_path": "c.d"}), 409, "already_exists")
    assert error["detail"] == {"tool_call_id": "t1"}

    assert client.patch("/api/executions/x/tool-calls/t1", json={}).status_code == 200
    again = client.patch("/api/executions/x/tool-calls/t1", json={"status": "completed"})
    assert again.status_code == 200
    assert again.json()["tool_call"]["status"] == "completed"
    error = error_of(client.patch("/api/executions/x/tool-calls/t1", json={"status": "failed"}),
                     409, "invalid_transition")
    assert error["detail"] == {"from": "completed", "to": "failed"}
    assert client.get("/api/executions/x").json()["execution"]["tool_call_count"] == 1


def test_tool_call_404s_and_422s(client: TestClient) -> None:
    create(client, id="x")
    create(client, id="y")
    client.post("/api/executions/y/tool-calls", json={"id": "ty", "tool_path": "a"})
    error = error_of(client.patch("/api/executions/x/tool-calls/nope", json={}), 404,
                     "tool_call_not_found")
    assert error["detail"] == {"execution_id": "x", "tool_call_id": "nope"}
    # A tool call of another execution is not found through this one.
    error_of(client.patch("/api/executions/x/tool-calls/ty", json={}), 404,
             "tool_call_not_found")
    error = error_of(client.post("/api/executions/x/tool-calls",
                                 json={"tool_path": "a", "parent_id": "ty"}), 422, "invalid_body")
    assert error["detail"]["path"] == ["parent_id"]
    for body, path in [({}, ["tool_path"]), ({"tool_path": ""}, ["tool_path"]),
                       ({"tool_path": "a", "status": "done"}, ["status"]),
                       ({"tool_path": "a", "started_at": "2026-11-21T10:00:02Z",
                         "completed_at": "2026-11-21T10:00:01Z", "status": "completed"},
                        ["completed_at"])]:
        error = error_of(client.post("/api/executions/x/tool-calls", json=body), 422,
                         "invalid_body")
        assert error["detail"]["path"] == path, body
    client.post("/api/executions/x/tool-calls", json={
        "id": "t", "tool_path": "a", "started_at": "2026-11-21T10:00:00Z"})
    for body, path in [({"status": "running"}, ["status"]), ({"extra": 1}, ["extra"]),
                       ({"completed_at": "2026-11-21T09:00:00Z"}, ["completed_at"])]:
        error = error_of(client.patch("/api/executions/x/tool-calls/t", json=body), 422,
                         "invalid_body")
        assert error["detail"]["path"] == path, body
    assert client.get("/api/executions/x/tool-calls").json()["tool_calls"][0]["status"] == (
        "running")


def test_tool_calls_list_takes_no_parameters(client: TestClient) -> None:
    create(client, id="x")
    error = error_of(client.get("/api/executions/x/tool-calls?limit=5"), 400, "bad_parameter")
    assert error["detail"] == {"parameter": "limit"}
    assert "limit" in error["message"]


# -- interactions -------------------------------------------------------------

def test_asking_waits_and_resolving_the_last_question_resumes(client: TestClient) -> None:
    create(client, id="x")
    r = client.post("/api/executions/x/interactions", json={
        "id": "q1", "message": "Deploy?", "kind": "approval", "request": {"env": "prod"}})
    assert r.status_code == 201, r.text
    q1 = r.json()["interaction"]
    assert set(q1) == INTERACTION_FIELDS
    assert (q1["id"], q1["execution_id"], q1["kind"], q1["status"], q1["message"]) == (
        "q1", "x", "approval", "pending", "Deploy?")
    assert (q1["action"], q1["response"], q1["resolved_at"]) == (None, None, None)
    assert q1["request"] == {"env": "prod"}
    detail = client.get("/api/executions/x").json()
    assert detail["execution"]["status"] == "waiting_for_interaction"
    assert detail["execution"]["had_elicitation"] is True
    assert detail["pending_interaction"] == q1

    q2 = client.post("/api/executions/x/interactions",
                     json={"message": "Which region?"}).json()["interaction"]
    assert q2["kind"] == "elicitation"
    r = client.post("/api/executions/x/interactions/q1/resolve", json={"action": "accept"})
    assert r.status_code == 200, r.text
    resolved = r.json()["interaction"]
    assert (resolved["status"], resolved["action"]) == ("resolved", "accept")
    assert TIME.match(resolved["resolved_at"])
    detail = client.get("/api/executions/x").json()
    assert detail["execution"]["status"] == "waiting_for_interaction"
    assert detail["pending_interaction"]["id"] == q2["id"]

    r = client.post(f"/api/executions/x/interactions/{q2['id']}/resolve",
                    json={"action": "accept", "response": {"region": "eu"}})
    assert r.json()["interaction"]["response"] == {"region": "eu"}
    detail = client.get("/api/executions/x").json()
    assert detail["execution"]["status"] == "running"
    assert detail["pending_interaction"] is None
    listed = client.get("/api/executions/x/interactions").json()["interactions"]
    assert [i["id"] for i in listed] == ["q1", q2["id"]]
    assert [i["status"] for i in listed] == ["resolved", "resolved"]
    assert types_of(client, "x") == [
        "execution.created", "interaction.requested", "execution.status",
        "interaction.requested", "interaction.resolved", "interaction.resolved",
        "execution.status"]
    status_changes = [e["data"] for e in events(client, "x") if e["type"] == "execution.status"]
    assert status_changes == [{"from": "running", "to": "waiting_for_interaction"},
                              {"from": "waiting_for_interaction", "to": "running"}]


def test_resolve_retries_conflicts_and_cancel(client: TestClient) -> None:
    create(client, id="x")
    client.post("/api/executions/x/interactions", json={"id": "q"})
    first = client.post("/api/executions/x/interactions/q/resolve",
                        json={"action": "decline"}).json()["interaction"]
    r = client.post("/api/executions/x/interactions/q/resolve", json={"action": "decline"})
    assert r.status_code == 200
    assert r.json() == {"interaction": first}
    error = error_of(client.post("/api/executions/x/interactions/q/resolve",
                                 json={"action": "accept"}), 409, "invalid_transition")
    assert error["detail"] == {"status": "resolved", "action": "decline"}

    client.post("/api/executions/x/interactions", json={"id": "q2"})
    r = client.post("/api/executions/x/interactions/q2/resolve", json={"action": "cancel"})
    assert (r.json()["interaction"]["status"], r.json()["interaction"]["action"]) == (
        "cancelled", "cancel")


def test_ask_retry_conflict_and_terminal(client: TestClient) -> None:
    create(client, id="x")
    first = client.post("/api/executions/x/interactions",
                        json={"id": "q", "message": "?"}).json()["interaction"]
    r = client.post("/api/executions/x/interactions", json={"id": "q", "message": "?"})
    assert r.status_code == 200
    assert r.json() == {"interaction": first}
    error_of(client.post("/api/executions/x/interactions", json={"id": "q", "kind": "approval"}),
             409, "already_exists")
    # Ending the run cancels its open question.
    client.patch("/api/executions/x", json={"status": "completed"})
    [q] = client.get("/api/executions/x/interactions").json()["interactions"]
    assert (q["status"], q["action"]) == ("cancelled", "cancel")
    error = error_of(client.post("/api/executions/x/interactions", json={"message": "late"}),
                     409, "invalid_transition")
    assert error["detail"] == {"status": "completed"}


def test_interaction_404s_and_422s(client: TestClient) -> None:
    create(client, id="x")
    error = error_of(client.post("/api/executions/x/interactions/nope/resolve",
                                 json={"action": "accept"}), 404, "interaction_not_found")
    assert error["detail"] == {"execution_id": "x", "interaction_id": "nope"}
    client.post("/api/executions/x/interactions", json={"id": "q"})
    for body, path in [({}, ["action"]), ({"action": "approve"}, ["action"]),
                       ({"action": "accept", "extra": 1}, ["extra"])]:
        error = error_of(client.post("/api/executions/x/interactions/q/resolve", json=body),
                         422, "invalid_body")
        assert error["detail"]["path"] == path
    for body, path in [({"kind": "question"}, ["kind"]), ({"message": 3}, ["message"]),
                       ({"message": "x" * (64 * 1024 + 1)}, ["message"])]:
        error = error_of(client.post("/api/executions/x/interactions", json=body), 422,
                         "invalid_body")
        assert error["detail"]["path"] == path
    assert client.get("/api/executions/x").json()["pending_interaction"]["id"] == "q"


# -- events -------------------------------------------------------------------

def test_append_answers_201_with_ids_and_seqs(client: TestClient) -> None:
    create(client, id="x")
    r = client.post("/api/executions/x/events", json={"events": [
        {"message": "starting"},
        {"type": "stdout", "message": "line 1", "ts": "2026-11-21T10:00:00.250Z"},
        {"type": "stderr", "level": "warn", "message": "careful"},
        {"level": "error", "message": "bad", "data": {"code": 7}},
        {"type": "artifact", "data": {"path": "out.txt"}},
    ]})
    assert r.status_code == 201, r.text
    written = r.json()["events"]
    assert set(r.json()) == {"events"}
    assert [w["seq"] for w in written] == [2, 3, 4, 5, 6]
    ids = [w["id"] for w in written]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(set(w) == {"id", "seq"} for w in written)
    stored = events(client, "x")[1:]
    assert all(set(e) == EVENT_FIELDS for e in stored)
    assert [(e["id"], e["seq"]) for e in stored] == [(w["id"], w["seq"]) for w in written]
    assert [(e["type"], e["level"]) for e in stored] == [
        ("log", "info"), ("stdout", "info"), ("stderr", "warn"), ("log", "error"),
        ("artifact", "info")]
    assert stored[1]["ts"] == "2026-11-21T10:00:00.250Z"
    assert stored[3]["data"] == {"code": 7}
    assert all(TIME.match(e["ts"]) for e in stored)
    x = client.get("/api/executions/x").json()["execution"]
    assert (x["error_count"], x["warn_count"]) == (1, 1)


def test_events_may_be_appended_to_a_finished_run(client: TestClient) -> None:
    create(client, id="x", status="completed")
    r = client.post("/api/executions/x/events", json={"events": [{"message": "late"}]})
    assert r.status_code == 201
    assert events(client, "x")[-1]["message"] == "late"


def test_event_message_limit_is_64_kb_of_utf8(client: TestClient) -> None:
    create(client, id="x")
    limit = 64 * 1024
    ok = client.post("/api/executions/x/events", json={"events": [{"message": "a" * limit}]})
    assert ok.status_code == 201, ok.text
    assert len(events(client, "x")[-1]["message"]) == limit
    for message in ("a" * (limit + 1), "é" * (limit // 2 + 1)):
        error = error_of(client.post("/api/executions/x/events", json={
            "events": [{"message": "fine"}, {"message": message}]}), 422, "invalid_body")
        assert error["detail"]["path"] == ["events", 1, "message"]
        assert str(limit) in error["message"]
    assert len(events(client, "x")) == 2


def test_append_takes_1_to_1000_events(client: TestClient) -> None:
    create(client, id="x")
    r = client.post("/api/executions/x/events",
                    json={"events": [{"message": str(i)} for i in range(1000)]})
    assert r.status_code == 201, r.text
    assert [w["seq"] for w in r.json()["events"]] == list(range(2, 1002))
    for batch in ([], [{"message": str(i)} for i in range(1001)]):
        error = error_of(client.post("/api/executions/x/events", json={"events": batch}),
                         422, "invalid_body")
        assert error["detail"]["path"] == ["events"]
    last = client.get("/api/executions/x/events", params={"after_seq": 1000}).json()
    assert ([e["message"] for e in last["events"]], last["next_after_seq"]) == (["999"], None)


@pytest.mark.parametrize(("body", "path"), [
    ({}, ["events"]),
    ({"events": {"message": "x"}}, ["events"]),
    ({"events": ["x"]}, ["events", 0]),
    ({"events": [{"type": "execution.status"}]}, ["events", 0, "type"]),
    ({"events": [{"level": "fatal"}]}, ["events", 0, "level"]),
    ({"events": [{"ts": "noon"}]}, ["events", 0, "ts"]),
    ({"events": [{"message": "x"}, {"seq": 4}]}, ["events", 1, "seq"]),
])
def test_append_rejects_bad_events_with_their_path(client: TestClient, body: dict[str, Any],
                                                   path: list[Any]) -> None:
    create(client, id="x")
    error = error_of(client.post("/api/executions/x/events", json=body), 422, "invalid_body")
    assert error["detail"]["path"] == path
    assert len(events(client, "x")) == 1


def _seed_events(client: TestClient) -> None:
    create(client, id="x")   # seq 1: execution.created
    batch = [
        {"type": "stdout", "message": "o1"}, {"type": "stderr", "level": "warn", "message": "e1"},
        {"message": "l1"}, {"type": "stdout", "message": "o2"},
        {"level": "error", "message": "boom"}, {"type": "stdout", "message": "o3"},
        {"level": "debug", "message": "d1"}, {"type": "stderr", "level": "error", "message": "e2"},
        {"message": "l2"},
    ]
    assert client.post("/api/executions/x/events", json={"events": batch}).status_code == 201


def test_events_page_by_after_seq_until_next_after_seq_is_null(client: TestClient) -> None:
    _seed_events(client)
    everything = events(client, "x")
    assert [e["seq"] for e in everything] == list(range(1, 11))
    seen: list[dict[str, Any]] = []
    after: int | None = 0
    pages = 0
    while after is not None:
        r = client.get("/api/executions/x/events", params={"after_seq": after, "limit": 3})
        body = r.json()
        assert set(body) == {"events", "next_after_seq"}
        assert len(body["events"]) <= 3
        seen.extend(body["events"])
        after = body["next_after_seq"]
        if after is not None:
            assert after == body["events"][-1]["seq"]
        pages += 1
    assert pages == 4
    assert seen == everything

    # Exactly `limit` events left: the page says there is nothing further.
    body = client.get("/api/executions/x/events", params={"after_seq": 7, "limit": 3}).json()
    assert [e["seq"] for e in body["events"]] == [8, 9, 10]
    assert body["next_after_seq"] is None
    body = client.get("/api/executions/x/events", params={"after_seq": 10}).json()
    assert body == {"events": [], "next_after_seq": None}
    assert len(client.get("/api/executions/x/events").json()["events"]) == 10


def test_events_filter_by_level_and_type(client: TestClient) -> None:
    _seed_events(client)
    body = client.get("/api/executions/x/events", params={"level": "error"}).json()
    assert [e["message"] for e in body["events"]] == ["boom", "e2"]
    body = client.get("/api/executions/x/events?level=warn&level=error").json()
    assert [e["message"] for e in body["events"]] == ["e1", "boom", "e2"]
    body = client.get("/api/executions/x/events", params={"type": "stdout,stderr"}).json()
    assert [e["message"] for e in body["events"]] == ["o1", "e1", "o2", "o3", "e2"]
    body = client.get("/api/executions/x/events",
                      params={"type": "stdout", "level": "info", "limit": 2}).json()
    assert [e["message"] for e in body["events"]] == ["o1", "o2"]
    assert body["next_after_seq"] == 5
    body = client.get("/api/executions/x/events", params={
        "type": "stdout", "level": "info", "limit": 2, "after_seq": 5}).json()
    assert ([e["message"] for e in body["events"]], body["next_after_seq"]) == (["o3"], None)
    body = client.get("/api/executions/x/events", params={"type": "execution.created"}).json()
    assert [e["seq"] for e in body["events"]] == [1]


@pytest.mark.parametrize(("query", "parameter"), [
    ("after_seq=-1", "after_seq"), ("after_seq=x", "after_seq"),
    ("after_seq=1&after_seq=2", "after_seq"), ("after_seq=99999999999", "after_seq"),
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"),
    ("level=fatal", "level"), ("type=bogus", "type"), ("type=log,nope", "type"),
    ("since=1", "since"),
])
def test_events_parameters_are_checked(client: TestClient, query: str, parameter: str) -> None:
    create(client, id="x")
    error = error_of(client.get(f"/api/executions/x/events?{query}"), 400, "bad_parameter")
    assert error["detail"] == {"parameter": parameter}
    assert error["message"].startswith(f"{parameter}:") or f"{parameter!r}" in error["message"]


def test_events_limit_bounds_are_1_and_1000(client: TestClient) -> None:
    _seed_events(client)
    body = client.get("/api/executions/x/events?limit=1").json()
    assert ([e["seq"] for e in body["events"]], body["next_after_seq"]) == ([1], 1)
    assert client.get("/api/executions/x/events?limit=1000").status_code == 200


# -- ingest -------------------------------------------------------------------

def _history() -> dict[str, Any]:
    return {"executions": [
        {
            "id": "h1", "name": "import", "status": "completed", "trigger_kind": "cron",
            "created_at": "2026-11-20T10:00:00Z", "started_at": "2026-11-20T10:00:01Z",
            "completed_at": "2026-11-20T10:00:11.500Z", "labels": {"team": "data"},
            "tool_calls": [
                {"id": "h1-t1", "tool_path": "db.query", "started_at": "2026-11-20T10:00:02Z",
                 "completed_at": "2026-11-20T10:00:03Z"},
                {"id": "h1-t2", "tool_path": "http.get", "parent_id": "h1-t1",
                 "status": "failed", "error": "503"},
            ],
            "interactions": [
                {"id": "h1-q", "kind": "approval", "message": "ok?", "status": "resolved",
                 "action": "accept", "resolved_at": "2026-11-20T10:00:05Z"},
            ],
            "events": [
                {"type": "stdout", "message": "hello", "ts": "2026-11-20T10:00:02Z"},
                {"level": "error", "message": "bad"},
                {"level": "warn", "message": "hm"},
                {"type": "execution.status", "data": {"from": "running", "to": "completed"}},
            ],
        },
        {"id": "h2", "status": "running", "created_at": 1795168800000},
        {"name": "no id given", "status": "failed"},
    ]}


def test_ingest_stores_history_as_given_and_counts_new_rows(client: TestClient) -> None:
    r = client.post("/api/ingest", json=_history())
    assert r.status_code == 200, r.text
    assert r.json() == {"executions": 3, "tool_calls": 2, "interactions": 1, "events": 7}

    detail = client.get("/api/executions/h1").json()
    h1 = detail["execution"]
    assert (h1["status"], h1["trigger_kind"], h1["labels"]) == ("completed", "cron",
                                                                {"team": "data"})
    assert (h1["created_at"], h1["started_at"], h1["completed_at"]) == (
        "2026-11-20T10:00:00.000Z", "2026-11-20T10:00:01.000Z", "2026-11-20T10:00:11.500Z")
    assert h1["duration_ms"] == 10500
    assert (h1["tool_call_count"], h1["had_elicitation"], h1["error_count"], h1["warn_count"]) == (
        2, True, 1, 1)
    assert detail["pending_interaction"] is None
    calls = client.get("/api/executions/h1/tool-calls").json()["tool_calls"]
    assert [(c["id"], c["seq"], c["namespace"], c["status"]) for c in calls] == [
        ("h1-t1", 1, "db", "completed"), ("h1-t2", 2, "http", "failed")]
    assert calls[0]["duration_ms"] == 1000
    assert calls[1]["parent_id"] == "h1-t1"
    [q] = client.get("/api/executions/h1/interactions").json()["interactions"]
    assert (q["id"], q["status"], q["action"], q["resolved_at"]) == (
        "h1-q", "resolved", "accept", "2026-11-20T10:00:05.000Z")
    # One execution.created per new execution, ahead of the given events.
    trace = events(client, "h1")
    assert [(e["seq"], e["type"]) for e in trace] == [
        (1, "execution.created"), (2, "stdout"), (3, "log"), (4, "log"), (5, "execution.status")]
    assert trace[0]["data"] == {"status": "completed"}
    assert trace[0]["ts"] == h1["created_at"]

    h2 = client.get("/api/executions/h2").json()["execution"]
    assert (h2["status"], h2["created_at"], h2["completed_at"]) == (
        "running", "2026-11-20T10:00:00.000Z", None)
    assert types_of(client, "h2") == ["execution.created"]
    listed = client.get("/api/executions", params={"status": "failed", "meta": "false"}).json()
    [generated] = listed["executions"]
    assert generated["name"] == "no id given"
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", generated["id"])


def test_ingest_again_changes_nothing(client: TestClient) -> None:
    batch = _history()
    batch["executions"] = batch["executions"][:2]
    assert client.post("/api/ingest", json=batch).json()["executions"] == 2
    before = client.get("/api/executions/h1").json()
    n_events = len(events(client, "h1"))
    r = client.post("/api/ingest", json=batch)
    assert r.status_code == 200
    assert r.json() == {"executions": 0, "tool_calls": 0, "interactions": 0, "events": 0}
    assert client.get("/api/executions/h1").json() == before
    assert len(events(client, "h1")) == n_events
    # An id that a live create already used is skipped too.
    create(client, id="live", name="live")
    r = client.post("/api/ingest", json={"executions": [{"id": "live", "name": "other"}]})
    assert r.json()["executions"] == 0
    assert client.get("/api/executions/live").json()["execution"]["name"] == "live"


def test_ingest_is_one_transaction(client: TestClient) -> None:
    create(client, id="x")
    client.post("/api/executions/x/tool-calls", json={"id": "taken", "tool_path": "a"})
    error = error_of(client.post("/api/ingest", json={"executions": [
        {"id": "new1"}, {"id": "new2", "tool_calls": [{"id": "taken", "tool_path": "b"}]},
    ]}), 409, "already_exists")
    assert "already exists" in error["message"]
    error_of(client.get("/api/executions/new1"), 404, "execution_not_found")
    error_of(client.get("/api/executions/new2"), 404, "execution_not_found")


def test_ingest_takes_up_to_1000_executions(client: TestClient) -> None:
    batch = {"executions": [{"id": f"b{i}"} for i in range(1000)]}
    r = client.post("/api/ingest", json=batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"executions": 1000, "tool_calls": 0, "interactions": 0, "events": 1000}
    error = error_of(client.post("/api/ingest", json={
        "executions": [{"id": f"c{i}"} for i in range(1001)]}), 422, "invalid_body")
    assert error["detail"]["path"] == ["executions"]
    assert "1000" in error["message"]
    total = client.get("/api/executions", params={"limit": 1}).json()["meta"]["total"]
    assert total == 1000


@pytest.mark.parametrize(("body", "path"), [
    ({}, ["executions"]),
    ({"executions": {}}, ["executions"]),
    ({"executions": [{"status": "ok"}]}, ["executions", 0, "status"]),
    ({"executions": [{}, {"tool_calls": [{"args": 1}]}]},
     ["executions", 1, "tool_calls", 0, "tool_path"]),
    ({"executions": [{"interactions": [{"status": "open"}]}]},
     ["executions", 0, "interactions", 0, "status"]),
    ({"executions": [{"events": [{"type": "nope"}]}]}, ["executions", 0, "events", 0, "type"]),
    ({"executions": [{"events": [{"message": "x" * 65537}]}]},
     ["executions", 0, "events", 0, "message"]),
    ({"executions": [{"id": "a b"}]}, ["executions", 0, "id"]),
    ({"executions": [], "extra": True}, ["extra"]),
])
def test_ingest_rejects_bad_batches_with_their_path(client: TestClient, body: dict[str, Any],
                                                    path: list[Any]) -> None:
    error = error_of(client.post("/api/ingest", json=body), 422, "invalid_body")
    assert error["detail"]["path"] == path
    assert client.get("/api/executions", params={"meta": "false"}).json()["executions"] == []


def test_ingest_of_nothing_writes_nothing(client: TestClient) -> None:
    r = client.post("/api/ingest", json={"executions": []})
    assert r.json() == {"executions": 0, "tool_calls": 0, "interactions": 0, "events": 0}
