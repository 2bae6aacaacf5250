"""A first pass over the record-and-read cycle through HTTP."""

from __future__ import annotations

from starlette.testclient import TestClient


def test_create_patch_read_cycle(client: TestClient) -> None:
    r = client.post("/api/executions", json={"id": "run-1", "name": "sync", "trigger_kind": "cli"})
    assert r.status_code == 201, r.text
    assert r.json()["execution"]["status"] == "running"
    r = client.post("/api/executions/run-1/tool-calls", json={"tool_path": "github.issues.list"})
    assert r.status_code == 201, r.text
    call = r.json()["tool_call"]
    assert (call["namespace"], call["seq"]) == ("github", 1)
    r = client.patch(f"/api/executions/run-1/tool-calls/{call['id']}", json={"result": [1]})
    assert r.json()["tool_call"]["status"] == "completed"
    r = client.patch("/api/executions/run-1", json={"status": "completed"})
    assert r.status_code == 200, r.text
    body = client.get("/api/executions/run-1").json()
    assert body["execution"]["tool_call_count"] == 1
    assert body["execution"]["duration_ms"] is not None
    r = client.patch("/api/executions/run-1", json={"status": "failed"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "invalid_transition"
    events = client.get("/api/executions/run-1/events").json()["events"]
    assert [e["type"] for e in events] == [
        "execution.created", "tool_call.started", "tool_call.finished", "execution.status"]
    listed = client.get("/api/executions").json()
    assert listed["meta"]["total"] == 1
