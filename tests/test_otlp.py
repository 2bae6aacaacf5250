"""OTLP/HTTP ingest through the real SDK exporter into a real server (issue 6)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.otlp_support import nested_trace, otlp_json
from tests.servers import running_server


def _export(base: str, spans: list[Any]) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=10)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _state(base: str, execution_id: str) -> dict[str, Any]:
    """Everything the API shows about a run, minus what depends on arrival order."""
    run = httpx.get(f"{base}/api/executions/{execution_id}").json()["execution"]
    calls = httpx.get(f"{base}/api/executions/{execution_id}/tool-calls").json()["tool_calls"]
    events = httpx.get(f"{base}/api/executions/{execution_id}/events",
                       params={"limit": 1000}).json()["events"]
    for key in ("updated_at",):
        run.pop(key)
    return {"run": run,
            "calls": sorted(({k: v for k, v in c.items() if k != "seq"} for c in calls),
                            key=lambda c: c["id"]),
            "events": sorted((e["type"], e["level"], e["message"]) for e in events)}


def _check_nested(state: dict[str, Any], trace_id: str) -> None:
    run, calls = state["run"], state["calls"]
    assert run["id"] == f"otel-{trace_id}"
    assert (run["name"], run["status"], run["trigger_kind"]) == ("nightly-sync", "completed",
                                                                  "cli")
    assert run["trigger_meta"]["service.name"] == "svc-test"
    assert run["code"] == "sync.main" and run["labels"] == {"team": "infra"}
    assert run["tool_call_count"] == 24 and len(calls) == 24
    top = [c for c in calls if c["parent_id"] is None]
    assert len(top) == 20
    inner = [c for c in calls if c["parent_id"] is not None]
    assert {c["tool_path"] for c in inner} == {"fs.read.4", "fs.read.9", "fs.read.14",
                                               "fs.read.19"}
    by_path = {c["tool_path"]: c for c in calls}
    assert by_path["fs.read.9"]["parent_id"] == by_path["github.issues.n9"]["id"]
    failed = by_path["github.issues.n6"]
    assert failed["status"] == "failed" and failed["error"] == "bad page 6"
    ok = by_path["github.issues.n3"]
    assert (ok["status"], ok["args"], ok["result"]) == ("completed", {"page": 3}, {"items": 3})
    assert sum(c["status"] == "failed" for c in calls) == 2
    errors = [e for e in state["events"] if e[1] == "error"]
    assert errors == [("log", "error", "ValueError: bad page 13"),
                      ("log", "error", "ValueError: bad page 6")]
    assert run["error_count"] == 2


def test_nested_trace_protobuf_json_order_and_resend(database_url: str) -> None:
    with running_server(database_url) as base:
        spans, trace_id = nested_trace()
        _export(base, spans)
        first = _state(base, f"otel-{trace_id}")
        _check_nested(first, trace_id)

        # Re-sending the whole batch changes nothing.
        _export(base, spans)
        assert _state(base, f"otel-{trace_id}") == first

        # The same trace through OTLP/JSON, gzipped, root first this time.
        spans2, trace2 = nested_trace()
        body = gzip.compress(json.dumps(otlp_json(spans2[::-1])).encode())
        answer = httpx.post(f"{base}/v1/traces", content=body, headers={
            "content-type": "application/json", "content-encoding": "gzip"})
        assert answer.status_code == 200 and answer.json() == {}
        _check_nested(_state(base, f"otel-{trace2}"), trace2)

        # Out of order across three batches, root last, then a batch again.
        spans3, trace3 = nested_trace()
        root = [s for s in spans3 if s.parent is None]
        rest = [s for s in spans3 if s.parent is not None][::-1]
        batches = [rest[12:], rest[:12], root]
        for batch in batches:
            _export(base, batch)
        placeholder_free = _state(base, f"otel-{trace3}")
        _check_nested(placeholder_free, trace3)
        _export(base, batches[1])
        assert _state(base, f"otel-{trace3}") == placeholder_free
        assert httpx.get(f"{base}/api/executions").json()["meta"]["total"] == 3


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
def test_bad_bodies_are_refused_and_change_nothing(sqlite_url: str, content_type: str,
                                                   ) -> None:
    # Nothing reaches the database: one database is enough.
    with running_server(sqlite_url) as base:
        url = f"{base}/v1/traces"
        garbage = httpx.post(url, content=b"\xff\x00garbage{", headers={
            "content-type": content_type})
        assert garbage.status_code == 400
        assert garbage.headers["content-type"].startswith(content_type)
        bad_gzip = httpx.post(url, content=b"not gzip", headers={
            "content-type": content_type, "content-encoding": "gzip"})
        assert bad_gzip.status_code == 400
        wrong = httpx.post(url, content=b"{}", headers={"content-type": "text/plain"})
        assert wrong.status_code == 415
        assert wrong.json()["error"]["code"] == "unsupported_media_type"
        huge = httpx.post(url, content=b"\x00" * (11 * 1024 * 1024), headers={
            "content-type": content_type})
        assert huge.status_code == 413
        bomb = gzip.compress(b"\x00" * (11 * 1024 * 1024))
        assert len(bomb) < 100_000
        inflated = httpx.post(url, content=bomb, headers={
            "content-type": content_type, "content-encoding": "gzip"})
        assert inflated.status_code == 413
        assert httpx.get(f"{base}/api/executions").json()["meta"]["total"] == 0


def test_invalid_ids_are_a_partial_success(sqlite_url: str) -> None:
    database_url = sqlite_url  # pure mapping: one database is enough
    spans, trace_id = nested_trace(2)
    doc = otlp_json(spans)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = ""  # type: ignore[index]
    with running_server(database_url) as base:
        answer = httpx.post(f"{base}/v1/traces", json=doc)
        assert answer.status_code == 200
        assert answer.json()["partialSuccess"]["rejectedSpans"] == "1"
        run = httpx.get(f"{base}/api/executions/otel-{trace_id}").json()["execution"]
        assert run["name"] == "nightly-sync"


def _span(span_id: str, parent: str, name: str, start: int, end: int,
          **extra: Any) -> dict[str, Any]:
    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id,
            "parentSpanId": parent, "name": name, "kind": 1,
            "startTimeUnixNano": str(start * 1_000_000), "endTimeUnixNano": end * 1_000_000,
            **extra}


def _body(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "hand"}}]},
        "scopeSpans": [{"scope": {"name": "hand.scope"}, "spans": list(spans)}]}]}


def test_hand_written_json_placeholder_and_interaction(database_url: str) -> None:
    """OTLP/JSON as the spec writes it (hex ids, enum numbers and names, int64 as
    strings or numbers); a child first makes a running placeholder."""
    eid = "otel-5b8efff798038103d269b633813fc60c"
    child = _span("eee19b7ec3c1b174", "eee19b7ec3c1b173", "ask", 1_700_000_000_100,
                  1_700_000_000_200, status={"code": "STATUS_CODE_OK"}, events=[{
                      "name": "runyard.interaction", "timeUnixNano": "1700000000150000000",
                      "attributes": [
                          {"key": "runyard.interaction.kind", "value": {"stringValue": "approval"}},
                          {"key": "runyard.interaction.message",
                           "value": {"stringValue": "deploy?"}},
                          {"key": "runyard.interaction.action",
                           "value": {"stringValue": "accept"}}]}])
    root = _span("eee19b7ec3c1b173", "", "deploy", 1_700_000_000_000, 1_700_000_001_000,
                 status={"code": 2, "message": "boom"},
                 attributes=[{"key": "n", "value": {"intValue": "3"}}])
    with running_server(database_url) as base:
        assert httpx.post(f"{base}/v1/traces", json=_body(child)).status_code == 200
        early = httpx.get(f"{base}/api/executions/{eid}").json()["execution"]
        assert early["status"] == "running" and early["trigger_kind"] == "otlp"
        assert httpx.post(f"{base}/v1/traces", json=_body(root)).status_code == 200
        run = httpx.get(f"{base}/api/executions/{eid}").json()["execution"]
        assert (run["name"], run["status"], run["error"]) == ("deploy", "failed", "boom")
        assert run["trigger_kind"] == "hand.scope" and run["labels"] == {"n": "3"}
        assert run["duration_ms"] == 1000 and run["had_elicitation"] is True
        calls = httpx.get(f"{base}/api/executions/{eid}/tool-calls").json()["tool_calls"]
        assert [(c["tool_path"], c["parent_id"]) for c in calls] == [("ask", None)]
        asked = httpx.get(f"{base}/api/executions/{eid}/interactions").json()["interactions"]
        assert [(i["kind"], i["status"], i["action"], i["message"]) for i in asked] == [
            ("approval", "resolved", "accept", "deploy?")]
        types = [e["type"] for e in httpx.get(
            f"{base}/api/executions/{eid}/events").json()["events"]]
        assert types == ["execution.created", "tool_call.started", "tool_call.finished",
                         "execution.status", "execution.updated"]
        # Both again, in one batch: nothing changes.
        assert httpx.post(f"{base}/v1/traces", json=_body(root, child)).status_code == 200
        assert len(httpx.get(f"{base}/api/executions/{eid}/events").json()["events"]) == 5
