"""The Read routes of the JSON API: list parameters, meta, paging, the OpenAPI
document and the health check, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from httpx2 import Response
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from app import api
from app.times import format_ms, now_ms
from tests.api_support import error_of

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR



def bad_parameter(r: Response, parameter: str) -> str:
    """The message of a 400 ``bad_parameter`` about ``parameter``."""
    error = error_of(r, 400, "bad_parameter")
    assert error["detail"] == {"parameter": parameter}
    assert parameter in error["message"]
    message: str = error["message"]
    return message


def ids(r: Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [x["id"] for x in r.json()["executions"]]


def seed(client: TestClient, **runs: dict[str, Any]) -> None:
    for run_id, body in runs.items():
        r = client.post("/api/executions", json={"id": run_id, **body})
        assert r.status_code == 201, r.text


# -- the list and its parameters ------------------------------------------------

def test_list_is_newest_first_with_meta_on_the_first_page(client: TestClient) -> None:
    base = now_ms() - HOUR
    seed(client, a={"created_at": base, "status": "completed"},
         b={"created_at": base + 1000, "status": "failed"},
         c={"created_at": base + 2000})
    body = client.get("/api/executions").json()
    assert set(body) == {"executions", "next_cursor", "meta"}
    assert [x["id"] for x in body["executions"]] == ["c", "b", "a"]
    assert body["next_cursor"] is None
    assert body["meta"]["total"] == 3
    status = {f["value"]: f["count"] for f in body["meta"]["facets"]["status"]}
    assert (status["completed"], status["failed"], status["running"]) == (1, 1, 1)
    assert all(TIME.match(x["created_at"]) for x in body["executions"])
    assert body["executions"][2]["created_at"] == format_ms(base)


def test_pages_walk_every_row_once_and_meta_defaults_to_false_on_cursor_pages(
        client: TestClient) -> None:
    base = now_ms() - HOUR
    seed(client, **{f"r{i}": {"created_at": base + i * 1000} for i in range(5)})
    first = client.get("/api/executions", params={"limit": 2}).json()
    assert [x["id"] for x in first["executions"]] == ["r4", "r3"]
    assert first["meta"]["total"] == 5
    seen = [x["id"] for x in first["executions"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = client.get("/api/executions", params={"limit": 2, "cursor": cursor}).json()
        assert "meta" not in page
        seen.extend(x["id"] for x in page["executions"])
        cursor = page["next_cursor"]
    assert seen == ["r4", "r3", "r2", "r1", "r0"]
    with_meta = client.get("/api/executions", params={
        "limit": 2, "cursor": first["next_cursor"], "meta": "true"}).json()
    assert [x["id"] for x in with_meta["executions"]] == ["r2", "r1"]
    assert with_meta["meta"]["total"] == 5


def test_meta_false_leaves_meta_out(client: TestClient) -> None:
    seed(client, a={})
    body = client.get("/api/executions", params={"meta": "false"}).json()
    assert set(body) == {"executions", "next_cursor"}
    assert [x["id"] for x in body["executions"]] == ["a"]
    assert "meta" in client.get("/api/executions", params={"meta": "true"}).json()


def test_sets_are_repeatable_or_comma_separated(client: TestClient) -> None:
    seed(client, a={"status": "completed"}, b={"status": "failed"}, c={},
         d={"status": "queued"})
    both = sorted(ids(client.get("/api/executions?status=completed,failed")))
    assert both == ["a", "b"]
    assert sorted(ids(client.get("/api/executions?status=completed&status=failed"))) == both
    assert sorted(ids(client.get("/api/executions?not_status=completed,failed"))) == ["c", "d"]


def test_unknown_parameter_is_named_with_what_is_accepted(client: TestClient) -> None:
    message = bad_parameter(client.get("/api/executions?stauts=failed"), "stauts")
    for accepted in ("status", "from", "limit", "cursor", "meta"):
        assert accepted in message


@pytest.mark.parametrize(("query", "parameter", "accepted"), [
    ("status=bogus", "status", "waiting_for_interaction"),
    ("status=failed,bogus", "status", "timed_out"),
    ("not_status=done", "not_status", "completed"),
    ("limit=0", "limit", "1 to 200"),
    ("limit=201", "limit", "1 to 200"),
    ("limit=-1", "limit", "1 to 200"),
    ("limit=ten", "limit", "1 to 200"),
    ("limit=1.5", "limit", "1 to 200"),
    ("limit=", "limit", "1 to 200"),
    ("limit=1&limit=2", "limit", "once"),
    ("sort=name", "sort", "created_at:desc"),
    ("sort=created_at", "sort", "duration_ms:asc"),
    ("meta=maybe", "meta", "true or false"),
    ("elicitation=2", "elicitation", "true or false"),
    ("min_duration_ms=-5", "min_duration_ms", "whole number"),
    ("max_duration_ms=1e3", "max_duration_ms", "whole number"),
    ("label=novalue", "label", "key=value"),
    ("label==v", "label", "key=value"),
    ("q=" + "x" * 1001, "q", "1000"),
    ("tool=" + "x" * 513, "tool", "512"),
])
def test_bad_values_are_named_with_what_is_accepted(client: TestClient, query: str,
                                                    parameter: str, accepted: str) -> None:
    message = bad_parameter(client.get(f"/api/executions?{query}"), parameter)
    assert accepted in message


@pytest.mark.parametrize("cursor", [
    "abc", "!!!!", "eyJhIjoxfQ",                      # not base64 JSON, a JSON object
    "WyJjcmVhdGVkX2F0OmRlc2MiLDFd",                   # ["created_at:desc",1]
    "WyJjcmVhdGVkX2F0OmRlc2MiLCJ4IiwiYSJd",           # a string where the time goes
    "WyJjcmVhdGVkX2F0OmRlc2MiLG51bGwsImEiXQ",         # a null time in a created_at sort
    "W10", "bnVsbA",                                  # [] and null
])
def test_a_cursor_not_from_next_cursor_is_400(client: TestClient, cursor: str) -> None:
    seed(client, a={})
    message = bad_parameter(client.get("/api/executions", params={"cursor": cursor}), "cursor")
    assert "next_cursor" in message


def test_a_cursor_made_for_another_sort_is_400(client: TestClient) -> None:
    seed(client, a={}, b={}, c={})
    cursor = client.get("/api/executions", params={"limit": 1}).json()["next_cursor"]
    assert cursor is not None
    message = bad_parameter(client.get("/api/executions", params={
        "limit": 1, "cursor": cursor, "sort": "duration_ms:asc"}), "cursor")
    assert "created_at:desc" in message and "duration_ms:asc" in message
    page = client.get("/api/executions", params={"limit": 1, "cursor": cursor})
    assert page.status_code == 200


@pytest.mark.parametrize(("parameter", "value"), [
    ("from", "yesterday"), ("from", "-15"), ("from", "15m"), ("from", "+15m"), ("from", "-1y"),
    ("from", "-15 m"), ("to", "2026-13-01T00:00:00Z"), ("to", "1.5"),
    ("to", "99999999999999999"), ("from", "1969-12-31T23:59:59Z"),
])
def test_bad_times_are_400_saying_what_is_accepted(client: TestClient, parameter: str,
                                                   value: str) -> None:
    message = bad_parameter(client.get("/api/executions", params={parameter: value}), parameter)
    assert "RFC 3339" in message
    assert "epoch milliseconds" in message
    assert "-15m" in message


def test_a_time_given_twice_is_400(client: TestClient) -> None:
    bad_parameter(client.get("/api/executions?from=-1h&from=-2h"), "from")


def test_relative_times(client: TestClient) -> None:
    now = now_ms()
    seed(client, m10={"created_at": now - 10 * MINUTE}, h2={"created_at": now - 2 * HOUR},
         d3={"created_at": now - 3 * DAY}, d10={"created_at": now - 10 * DAY})
    assert ids(client.get("/api/executions?from=-15m")) == ["m10"]
    assert ids(client.get("/api/executions?from=-24h")) == ["m10", "h2"]
    assert ids(client.get("/api/executions?from=-7d")) == ["m10", "h2", "d3"]
    assert ids(client.get("/api/executions?from=-1w")) == ["m10", "h2", "d3"]
    assert ids(client.get("/api/executions?to=-1h")) == ["h2", "d3", "d10"]
    assert ids(client.get("/api/executions?from=-7d&to=-1h")) == ["h2", "d3"]
    assert ids(client.get("/api/executions?from=-900s")) == ["m10"]


def test_absolute_times_as_rfc3339_or_epoch_ms(client: TestClient) -> None:
    seed(client, a={"created_at": "2026-11-20T10:00:00Z"},
         b={"created_at": "2026-11-20T11:00:00Z"}, c={"created_at": "2026-11-20T12:00:00Z"})
    b_ms = 1795172400000
    assert format_ms(b_ms) == "2026-11-20T11:00:00.000Z"
    # from is inclusive, to exclusive.
    assert ids(client.get("/api/executions", params={
        "from": "2026-11-20T11:00:00Z", "to": "2026-11-20T12:00:00Z"})) == ["b"]
    assert ids(client.get("/api/executions", params={"from": b_ms, "to": b_ms + 1})) == ["b"]
    assert ids(client.get("/api/executions", params={
        "from": "2026-11-20T12:00:00+01:00"})) == ["c", "b"]
    body = client.get("/api/executions", params={
        "from": "2026-11-20T10:00:00Z", "to": "2026-11-20T13:00:00.5Z"}).json()
    timeline = body["meta"]["timeline"]
    assert (timeline["from"], timeline["to"]) == ("2026-11-20T10:00:00.000Z",
                                                  "2026-11-20T13:00:00.500Z")
    assert all(TIME.match(b["start"]) for b in timeline["buckets"])
    assert sum(sum(b["counts"].values()) for b in timeline["buckets"]) == 3


def test_labels_and_query_text(client: TestClient) -> None:
    seed(client, a={"labels": {"env": "prod", "team": "data"}, "name": "50% done"},
         b={"labels": {"env": "prod"}, "name": "50x done"}, c={"labels": {"env": "dev"}})
    assert sorted(ids(client.get("/api/executions?label=env=prod"))) == ["a", "b"]
    assert ids(client.get("/api/executions?label=env=prod&label=team=data")) == ["a"]
    assert ids(client.get("/api/executions", params={"q": "50%"})) == ["a"]
    assert ids(client.get("/api/executions", params={"q": "50_"})) == []


def test_labels_with_non_ascii_or_quoted_keys(client: TestClient) -> None:
    # json_extract on SQLite 3.40 does not match a key that json.dumps escaped
    # (\u00fc, \"), so such keys once matched nothing there.
    seed(client, a={"labels": {"ü": "1", 'a"b': "2"}})
    assert ids(client.get("/api/executions", params={"label": "ü=1"})) == ["a"]
    assert ids(client.get("/api/executions", params={"label": 'a"b=2'})) == ["a"]


# -- the OpenAPI document ---------------------------------------------------------

def _document(client: TestClient) -> dict[str, Any]:
    r = client.get("/api/openapi.json")
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def test_openapi_is_a_valid_3_1_document(client: TestClient) -> None:
    document = _document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)
    operation_ids = [op["operationId"] for item in document["paths"].values()
                     for key, op in item.items() if key != "parameters"]
    assert len(operation_ids) == len(set(operation_ids))


def test_openapi_lists_every_route_of_the_api(client: TestClient) -> None:
    paths = _document(client)["paths"]
    routes = [r for r in api.routes if isinstance(r, Route)]
    assert len(routes) >= 15
    for route in routes:
        assert route.path in paths, route.path
        for method in (route.methods or set()) - {"HEAD"}:
            operation = paths[route.path].get(method.lower())
            assert operation is not None, f"{method} {route.path}"
            assert any(code.startswith("2") for code in operation["responses"])
            if method in ("POST", "PATCH"):
                assert operation["requestBody"]["content"]["application/json"]["schema"]
    documented = {(p, m) for p, item in paths.items() for m in item if m != "parameters"}
    served = {(r.path, m.lower()) for r in routes for m in (r.methods or set()) - {"HEAD"}}
    assert documented == served


def test_responses_match_the_documented_schemas(client: TestClient) -> None:
    document = _document(client)

    def check(r: Response, path: str, method: str) -> None:
        responses = document["paths"][path][method]["responses"]
        assert str(r.status_code) in responses, (path, method, r.status_code)
        schema = responses[str(r.status_code)]["content"]["application/json"]["schema"]
        validator = OAS31Validator({**schema, "components": document["components"]})
        errors = [e.message for e in validator.iter_errors(r.json())]
        assert errors == [], (path, method, errors)

    x = "/api/executions/{execution_id}"
    check(client.post("/api/executions", json={"id": "x", "labels": {"a": "b"}}),
          "/api/executions", "post")
    check(client.post("/api/executions", json={"id": "x"}), "/api/executions", "post")
    check(client.post("/api/executions/x/tool-calls", json={"id": "t", "tool_path": "a.b"}),
          x + "/tool-calls", "post")
    check(client.patch("/api/executions/x/tool-calls/t", json={}),
          x + "/tool-calls/{tool_call_id}", "patch")
    check(client.post("/api/executions/x/interactions", json={"id": "q"}),
          x + "/interactions", "post")
    check(client.get("/api/executions/x"), x, "get")
    check(client.post("/api/executions/x/interactions/q/resolve", json={"action": "accept"}),
          x + "/interactions/{interaction_id}/resolve", "post")
    check(client.post("/api/executions/x/events", json={"events": [{"message": "m"}]}),
          x + "/events", "post")
    check(client.patch("/api/executions/x", json={"status": "completed", "progress_pct": 5}),
          x, "patch")
    check(client.post("/api/ingest", json={"executions": [{"id": "y", "tool_calls": [
        {"tool_path": "c"}]}]}), "/api/ingest", "post")
    check(client.get("/api/executions"), "/api/executions", "get")
    check(client.get("/api/executions?meta=false"), "/api/executions", "get")
    check(client.get("/api/executions/x/tool-calls"), x + "/tool-calls", "get")
    check(client.get("/api/executions/x/interactions"), x + "/interactions", "get")
    check(client.get("/api/executions/x/events?limit=2"), x + "/events", "get")
    check(client.get("/healthz"), "/healthz", "get")
    check(client.get("/api/executions?limit=0"), "/api/executions", "get")
    check(client.get("/api/executions/nope"), x, "get")
    check(client.post("/api/executions", json={"status": 1}), "/api/executions", "post")
    check(client.patch("/api/executions/x", json={"status": "running"}), x, "patch")


# -- health -----------------------------------------------------------------------

def test_healthz_says_ok_when_the_database_answers(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"ok": True}


def test_healthz_is_503_in_the_error_shape_when_it_does_not(client: TestClient,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    def broken() -> bool:
        raise OSError("connection refused")

    monkeypatch.setattr(client.app.state.store, "ping", broken)  # type: ignore[attr-defined]
    error = error_of(client.get("/healthz"), 503, "unavailable")
    assert "database" in error["message"]
