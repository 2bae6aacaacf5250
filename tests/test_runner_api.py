"""The job routes over HTTP: submit, idempotency, approval, cancel, re-run, and the 403s.

The app runs with its in-process worker pool (``allow_exec``), on SQLite and
PostgreSQL; commands are real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.factory import create_app
from tests.jobs_support import FAST

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def _client(database_url: str, **settings: Any) -> TestClient:
    app = create_app(FAST.with_(database_url=database_url, **settings))
    # A loopback Host: the job routes refuse others (DNS rebinding).
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False,
                      client=("127.0.0.1", 50000))


@pytest.fixture
def api(database_url: str) -> Iterator[TestClient]:
    with _client(database_url, allow_exec=True) as c:
        yield c


@pytest.fixture
def api_off(database_url: str) -> Iterator[TestClient]:
    with _client(database_url) as c:
        yield c


def submit(api: TestClient, expect: int = 202, **body: Any) -> dict[str, Any]:
    body.setdefault("command", {"argv": ["true"]})
    r = api.post("/api/jobs", json=body)
    assert r.status_code == expect, r.text
    return dict(r.json())


def execution(api: TestClient, run: str) -> dict[str, Any]:
    r = api.get(f"/api/executions/{run}")
    assert r.status_code == 200, r.text
    return dict(r.json()["execution"])


def wait(api: TestClient, run: str, statuses: set[str] = TERMINAL) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while (e := execution(api, run))["status"] not in statuses:
        assert time.monotonic() < deadline, e
        time.sleep(0.02)
    return e


def error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    return dict(body)


def test_every_job_route_is_403_until_exec_is_enabled_and_says_how(
        api_off: TestClient) -> None:
    run = api_off.post("/api/executions", json={"id": "r1"}).json()["execution"]["id"]
    routes = [("/api/jobs", {"command": {"argv": ["true"]}})] + [
        (f"/api/executions/{run}/{action}", None)
        for action in ("approve", "reject", "cancel", "rerun")]
    for path, body in routes:
        err = error(api_off.post(path, json=body), 403, "forbidden")
        assert "--allow-exec" in err["message"] and "RUNYARD_ALLOW_EXEC=1" in err["message"]
        assert err["detail"]["reason"] == "exec_disabled"


def test_a_submitted_command_runs_and_is_recorded(api: TestClient) -> None:
    answer = submit(api, command={"argv": ["echo", "hello world"]}, name="greet",
                    labels={"env": "test"})
    assert answer["status"] == "queued" and set(answer) == {"execution_id", "status"}
    done = wait(api, answer["execution_id"])
    assert (done["status"], done["exit_code"], done["name"]) == ("completed", 0, "greet")
    assert (done["trigger_kind"], done["code"], done["labels"]) == (
        "http", "echo 'hello world'", {"env": "test"})
    # Who submitted it: the local user while no token exists.
    assert done["trigger_meta"]["job"]["submitted_by"] == {"name": "local", "via": "local"}
    events = api.get(f"/api/executions/{answer['execution_id']}/events?type=stdout").json()
    assert [e["message"] for e in events["events"]] == ["hello world"]


def test_the_same_idempotency_key_answers_the_existing_execution(api: TestClient) -> None:
    first = submit(api, idempotency_key="deploy-42", command={"argv": ["true"]})
    again = submit(api, 200, idempotency_key="deploy-42", command={"argv": ["false"]})
    assert again["execution_id"] == first["execution_id"]
    assert api.get("/api/executions?meta=true").json()["meta"]["total"] == 1


def test_approval_holds_the_job_until_approved(api: TestClient) -> None:
    answer = submit(api, command={"shell": "echo approved"}, requires_approval=True)
    run = answer["execution_id"]
    assert answer["status"] == "waiting_for_interaction"
    time.sleep(0.2)   # a worker is polling: nothing may run before the approval
    assert execution(api, run)["status"] == "waiting_for_interaction"
    (asked,) = api.get(f"/api/executions/{run}/interactions").json()["interactions"]
    assert (asked["kind"], asked["status"]) == ("approval", "pending")
    r = api.post(f"/api/executions/{run}/approve")
    assert (r.status_code, r.json()) == (202, {"execution_id": run, "status": "queued"})
    assert wait(api, run)["status"] == "completed"
    error(api.post(f"/api/executions/{run}/approve"), 409, "not_awaiting_approval")
    (answered,) = api.get(f"/api/executions/{run}/interactions").json()["interactions"]
    assert (answered["status"], answered["action"]) == ("resolved", "accept")


def test_decline_cancels_and_nothing_runs(api: TestClient) -> None:
    run = submit(api, command={"shell": "echo never"}, requires_approval=True)["execution_id"]
    r = api.post(f"/api/executions/{run}/reject", json={"reason": "not today"})
    assert (r.status_code, r.json()) == (202, {"execution_id": run, "status": "cancelled"})
    done = execution(api, run)
    assert (done["status"], done["error"], done["started_at"]) == (
        "cancelled", "declined: not today", None)
    error(api.post(f"/api/executions/{run}/reject"), 409, "not_awaiting_approval")


def test_the_generic_resolve_route_queues_an_approved_job_not_running(api: TestClient) -> None:
    run = submit(api, command={"shell": "sleep 0.3"}, requires_approval=True)["execution_id"]
    (asked,) = api.get(f"/api/executions/{run}/interactions").json()["interactions"]
    r = api.post(f"/api/executions/{run}/interactions/{asked['id']}/resolve",
                 json={"action": "accept"})
    assert r.status_code == 200 and r.json()["interaction"]["status"] == "resolved"
    events = api.get(f"/api/executions/{run}/events?type=execution.status").json()["events"]
    # waiting → queued; `running` only once a worker has claimed it.
    assert events[1]["data"] == {"from": "waiting_for_interaction", "to": "queued"}
    assert wait(api, run)["status"] == "completed"
    declined = submit(api, requires_approval=True)["execution_id"]
    (asked,) = api.get(f"/api/executions/{declined}/interactions").json()["interactions"]
    api.post(f"/api/executions/{declined}/interactions/{asked['id']}/resolve",
             json={"action": "decline"})
    assert execution(api, declined)["status"] == "cancelled"


def test_the_generic_resolve_route_on_a_job_approval_needs_exec(
        api: TestClient, api_off: TestClient) -> None:
    run = submit(api, requires_approval=True)["execution_id"]
    (asked,) = api_off.get(f"/api/executions/{run}/interactions").json()["interactions"]
    error(api_off.post(f"/api/executions/{run}/interactions/{asked['id']}/resolve",
                       json={"action": "accept"}), 403, "forbidden")


def test_approve_anything_else_is_409_and_unknown_is_404(api: TestClient) -> None:
    queued = submit(api, command={"argv": ["sleep", "5"]})["execution_id"]
    error(api.post(f"/api/executions/{queued}/approve"), 409, "not_awaiting_approval")
    api.post("/api/executions", json={"id": "recorded"})
    api.post("/api/executions/recorded/interactions", json={"kind": "approval"})
    error(api.post("/api/executions/recorded/approve"), 409, "not_awaiting_approval")
    for action in ("approve", "reject", "cancel", "rerun"):
        error(api.post(f"/api/executions/nope/{action}"), 404, "execution_not_found")
    api.post(f"/api/executions/{queued}/cancel")


def test_cancel_stops_a_running_job_and_a_finished_one_is_409(api: TestClient) -> None:
    run = submit(api, command={"argv": ["sleep", "30"]})["execution_id"]
    wait(api, run, {"running"})
    r = api.post(f"/api/executions/{run}/cancel")
    assert (r.status_code, r.json()["status"]) == (202, "running")
    started = time.monotonic()
    assert wait(api, run)["status"] == "cancelled"
    assert time.monotonic() - started < 5
    error(api.post(f"/api/executions/{run}/cancel"), 409, "invalid_transition")
    api.post("/api/executions", json={"id": "not-a-job"})
    err = error(api.post("/api/executions/not-a-job/cancel"), 409, "invalid_transition")
    assert err["detail"]["reason"] == "not_a_job"


def test_cancel_before_it_runs_is_immediate(api: TestClient) -> None:
    run = submit(api, requires_approval=True)["execution_id"]
    r = api.post(f"/api/executions/{run}/cancel")
    assert (r.status_code, r.json()["status"]) == (202, "cancelled")
    (asked,) = api.get(f"/api/executions/{run}/interactions").json()["interactions"]
    assert asked["status"] == "cancelled"


def test_rerun_makes_a_linked_execution_of_the_same_command(api: TestClient) -> None:
    first = submit(api, command={"argv": ["echo", "again"]}, name="twice")["execution_id"]
    wait(api, first)
    r = api.post(f"/api/executions/{first}/rerun")
    assert r.status_code == 202
    second = r.json()["execution_id"]
    assert second != first
    done = wait(api, second)
    assert (done["rerun_of"], done["code"], done["name"], done["status"]) == (
        first, "echo again", "twice", "completed")
    api.post("/api/executions", json={"id": "plain"})
    error(api.post("/api/executions/plain/rerun"), 409, "invalid_transition")


def test_bodies_are_validated_with_the_field_path(api: TestClient) -> None:
    for body, path in [({"command": {"argv": ["a"], "shell": "b"}}, ["command"]),
                       ({"command": {"argv": []}}, ["command", "argv"]),
                       ({"command": {"shell": "x"}, "env": {"1BAD": "x"}}, ["env", "1BAD"]),
                       ({"command": {"shell": "x"}, "timeout_s": 0}, ["timeout_s"]),
                       ({"command": {"shell": "x"}, "max_attempts": 11}, ["max_attempts"]),
                       ({"command": {"shell": "x"}, "extra": 1}, ["extra"])]:
        err = error(api.post("/api/jobs", json=body), 422, "invalid_body")
        assert err["detail"]["path"][:len(path)] == path, (body, err)
    error(api.post("/api/jobs", content=b"{nope"), 400, "invalid_json")
    error(api.post("/api/executions/x/cancel", content=b"[1]"), 422, "invalid_body")


def test_cross_site_and_foreign_host_requests_are_refused(api: TestClient) -> None:
    body = {"command": {"argv": ["true"]}}
    err = error(api.post("/api/jobs", json=body, headers={"Origin": "https://evil.example"}),
                403, "forbidden")
    assert err["detail"]["reason"] == "cross_origin"
    err = error(api.post("/api/jobs", json=body, headers={"Host": "evil.example:8000"}),
                403, "forbidden")
    assert err["detail"]["reason"] == "host_not_allowed"
    same = api.post("/api/jobs", json=body, headers={"Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 202


def test_a_timeout_over_the_server_cap_is_capped_and_said(database_url: str) -> None:
    with _client(database_url, allow_exec=True, job_max_timeout_s=2.0) as api:
        run = submit(api, command={"argv": ["true"]}, timeout_s=3600)["execution_id"]
        logs = api.get(f"/api/executions/{run}/events?type=log").json()["events"]
        assert logs[0]["message"] == "timeout capped at 2s by this server (asked for 3600s)"
        assert execution(api, run)["trigger_meta"]["job"]["timeout_s"] == 2.0


def test_the_openapi_document_has_the_job_routes(api: TestClient) -> None:
    paths = api.get("/api/openapi.json").json()["paths"]
    assert "requestBody" in paths["/api/jobs"]["post"]
    for action in ("approve", "reject", "cancel", "rerun"):
        assert "202" in paths[f"/api/executions/{{execution_id}}/{action}"]["post"]["responses"]
