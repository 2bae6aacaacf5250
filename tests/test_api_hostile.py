"""Hostile requests: whatever a client sends, the API answers in the error shape
and never with a 500 ("a request can never cause a 500 by its content")."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from httpx2 import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.testclient import TestClient

from app.api.body import MAX_DEPTH
from app.store.inputs import (
    EventIn,
    EventsAppend,
    ExecutionCreate,
    ExecutionPatch,
    IngestBatch,
    IngestEvent,
    IngestExecution,
    IngestInteraction,
    IngestToolCall,
    InteractionAsk,
    InteractionResolve,
    ToolCallFinish,
    ToolCallStart,
)
from tests.api_support import error_of

MAX_BODY = 10 * 1024 * 1024

# Every route that takes a body, with a body it accepts.
WRITE_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/executions", {"name": "n"}),
    ("PATCH", "/api/executions/x", {"progress_pct": 5}),
    ("POST", "/api/executions/x/tool-calls", {"tool_path": "a.b"}),
    ("PATCH", "/api/executions/x/tool-calls/t", {"status": "completed"}),
    ("POST", "/api/executions/x/interactions", {"message": "?"}),
    ("POST", "/api/executions/x/interactions/q/resolve", {"action": "accept"}),
    ("POST", "/api/executions/x/events", {"events": [{"message": "m"}]}),
    ("POST", "/api/ingest", {"executions": [{"name": "n"}]}),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in WRITE_ROUTES]

# Every route about one execution; {x} is its id, {t} a tool call's, {q} an interaction's.
EXECUTION_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/executions/{x}", None),
    ("PATCH", "/api/executions/{x}", {"progress_pct": 5}),
    ("GET", "/api/executions/{x}/tool-calls", None),
    ("POST", "/api/executions/{x}/tool-calls", {"tool_path": "a.b"}),
    ("PATCH", "/api/executions/{x}/tool-calls/{t}", {"status": "completed"}),
    ("GET", "/api/executions/{x}/interactions", None),
    ("POST", "/api/executions/{x}/interactions", {"message": "?"}),
    ("POST", "/api/executions/{x}/interactions/{q}/resolve", {"action": "accept"}),
    ("GET", "/api/executions/{x}/events", None),
    ("POST", "/api/executions/{x}/events", {"events": [{"message": "m"}]}),
]



def not_a_crash(r: Response) -> None:
    """Any answer below 500; an error one in the error shape."""
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json"), r.text
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    """A client whose database holds run ``x`` with tool call ``t`` and question ``q``."""
    assert client.post("/api/executions", json={"id": "x"}).status_code == 201
    assert client.post("/api/executions/x/tool-calls",
                       json={"id": "t", "tool_path": "a.b"}).status_code == 201
    assert client.post("/api/executions/x/interactions", json={"id": "q"}).status_code == 201
    return client


def untouched(client: TestClient) -> None:
    """Nothing but the seed is stored."""
    runs = client.get("/api/executions", params={"meta": "false"}).json()["executions"]
    assert [r["id"] for r in runs] == ["x"]
    events = client.get("/api/executions/x/events").json()["events"]
    assert [e["type"] for e in events] == [
        "execution.created", "tool_call.started", "interaction.requested", "execution.status"]


def nested(depth: int) -> bytes:
    """``depth`` arrays, one inside the other."""
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    """``depth`` objects, each the value of "k" in the one around it."""
    return b'{"k":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


# -- bodies that are not JSON ---------------------------------------------------

NOT_JSON = [
    b"", b" ", b"not json", b"{", b"}", b"[1,2", b"{'name': 'x'}", b'{"name": "x",}',
    b'{"name": undefined}', b"\xff\xfe\x00", b'{"name": "\xff"}', b'{"name": "\xed\xa0\x80"}',
    b'{"result": "\xed\xa0\x80"}', b'{"result": {"\xed\xbf\xbf": 1}}',  # encoded surrogates
    "{}".encode("utf-16"), b'{"name": "a\x00b"}', b"\x00", b"NaN", b'{"result": NaN}',
    b'{"result": Infinity}', b'{"result": -Infinity}', b'{"result": 1e400}',
    b'{"progress_pct": -1e999}', b'{"created_at": 1e400}', b'{"result": 1' + b"0" * 5000 + b"}",
    b"<html></html>", b"name=x&status=failed", b'{"a": 1} {"b": 2}',
    nested(100_000), nested_objects(100_000), b'{"result": ' + nested(100_000) + b"}",
]


@pytest.mark.parametrize(("method", "path", "ok"), WRITE_ROUTES, ids=ROUTE_IDS)
def test_a_body_that_is_not_json_is_400_invalid_json(seeded: TestClient, method: str,
                                                     path: str, ok: dict[str, Any]) -> None:
    for raw in NOT_JSON:
        r = seeded.request(method, path, content=raw,
                           headers={"content-type": "application/json"})
        error = error_of(r, 400, "invalid_json")
        assert "JSON" in error["message"] or "nested" in error["message"], raw[:40]
    untouched(seeded)


def test_invalid_json_says_why(client: TestClient) -> None:
    for raw, words in [(b'{"result": NaN}', "NaN"), (b'{"result": Infinity}', "Infinity"),
                       (b'{"result": 1e400}', "1e400"), (nested(100_000), "nested")]:
        error = error_of(client.post("/api/executions", content=raw), 400, "invalid_json")
        assert words in error["message"]


@pytest.mark.parametrize(("method", "path", "ok"), WRITE_ROUTES, ids=ROUTE_IDS)
def test_json_of_the_wrong_kind_is_422_at_the_root(seeded: TestClient, method: str, path: str,
                                                   ok: dict[str, Any]) -> None:
    for value in ([], [ok], None, "x", 1, 1.5, True):
        r = seeded.request(method, path, content=json.dumps(value).encode())
        error = error_of(r, 422, "invalid_body")
        assert error["detail"]["path"] == []
    untouched(seeded)
    assert seeded.request(method, path, json=ok).status_code in (200, 201)


# -- nesting --------------------------------------------------------------------

def test_nesting_is_limited_and_the_limit_names_the_path(client: TestClient) -> None:
    # The body is one level: "result" may nest MAX_DEPTH - 1 more.
    deepest = b'{"result": ' + nested(MAX_DEPTH - 1) + b"}"
    r = client.post("/api/executions", content=deepest)
    assert r.status_code == 201, r.text
    value = r.json()["execution"]["result"]
    for _ in range(MAX_DEPTH - 2):
        [value] = value
    assert value == []
    for depth in (MAX_DEPTH, 500, 900):
        body = b'{"result": ' + nested(depth) + b"}"
        error = error_of(client.post("/api/executions", content=body), 422, "invalid_body")
        assert error["detail"]["path"] == ["result"] + [0] * (MAX_DEPTH - 1)
        assert error["detail"]["max_depth"] == MAX_DEPTH
        assert str(MAX_DEPTH) in error["message"]
    deep_objects = b'{"result": ' + nested_objects(200) + b"}"
    error = error_of(client.post("/api/executions", content=deep_objects), 422, "invalid_body")
    assert error["detail"]["path"] == ["result"] + ["k"] * (MAX_DEPTH - 1)
    # Nothing deep was stored, so every list still renders.
    r = client.get("/api/executions")
    assert r.status_code == 200
    assert r.json()["meta"]["total"] == 1


@pytest.mark.parametrize(("method", "path", "ok"), WRITE_ROUTES, ids=ROUTE_IDS)
def test_deep_bodies_on_every_write_route(seeded: TestClient, method: str, path: str,
                                          ok: dict[str, Any]) -> None:
    for depth in (MAX_DEPTH + 1, 900):
        r = seeded.request(method, path, content=nested(depth))
        error_of(r, 422, "invalid_body")
        r = seeded.request(method, path, content=nested_objects(depth))
        error_of(r, 422, "invalid_body")
    untouched(seeded)


# -- NUL characters and lone surrogates -----------------------------------------

def _with(raw_json: str) -> bytes:
    return raw_json.encode("ascii")


UNSTORABLE = [
    # (method, path, body, path of the bad string)
    ("POST", "/api/executions", r'{"name": "a\u0000b"}', ["name"]),
    ("POST", "/api/executions", r'{"id": "x\u0000"}', ["id"]),
    ("POST", "/api/executions", r'{"result": {"k\u0000": 1}}', ["result", "k\x00"]),
    ("POST", "/api/executions", r'{"result": ["ok", "\ud800"]}', ["result", 1]),
    ("POST", "/api/executions", r'{"trigger_meta": {"\udfff": "v"}}', ["trigger_meta", "\udfff"]),
    ("POST", "/api/executions", r'{"\ud83d": 1}', ["\ud83d"]),
    ("PATCH", "/api/executions/x", r'{"error": "\u0000"}', ["error"]),
    ("PATCH", "/api/executions/x", r'{"labels": {"\ud800x": "v"}}', ["labels", "\ud800x"]),
    ("PATCH", "/api/executions/x", r'{"labels": {"k": "\uDBFF"}}', ["labels", "k"]),
    ("POST", "/api/executions/x/tool-calls", r'{"tool_path": "a\u0000"}', ["tool_path"]),
    ("POST", "/api/executions/x/tool-calls", r'{"tool_path": "a", "args": {"\u0000": 0}}',
     ["args", "\x00"]),
    ("PATCH", "/api/executions/x/tool-calls/t", r'{"result": "\ude00"}', ["result"]),
    ("POST", "/api/executions/x/interactions", r'{"message": "\u0000"}', ["message"]),
    ("POST", "/api/executions/x/interactions/q/resolve",
     r'{"action": "accept", "response": {"a": ["\u0000"]}}', ["response", "a", 0]),
    ("POST", "/api/executions/x/events", r'{"events": [{"message": "ok"}, {"message": "\ud800"}]}',
     ["events", 1, "message"]),
    ("POST", "/api/executions/x/events", r'{"events": [{"data": {"k\u0000": 1}}]}',
     ["events", 0, "data", "k\x00"]),
    ("POST", "/api/ingest",
     r'{"executions": [{"name": "ok"}, {"tool_calls": [{"tool_path": "\u0000"}]}]}',
     ["executions", 1, "tool_calls", 0, "tool_path"]),
]


@pytest.mark.parametrize(("method", "path", "body", "where"), UNSTORABLE)
def test_nul_and_lone_surrogates_are_422_naming_where(seeded: TestClient, method: str,
                                                      path: str, body: str,
                                                      where: list[Any]) -> None:
    error = error_of(seeded.request(method, path, content=_with(body)), 422, "invalid_body")
    assert error["detail"]["path"] == where
    assert "NUL" in error["message"]
    untouched(seeded)


def test_surrogate_pairs_and_other_unicode_round_trip(client: TestClient) -> None:
    name = "😀 ünïcode \u200b\u202e RTL مرحبا \\u0000 literally"
    body = _with(json.dumps({"id": "u", "name": name, "labels": {"ключ": "値"},
                             "result": {"\U0001f600": ["\ufeff", "\u2028"]}}))
    assert b"\\ud83d\\ude00" in body
    r = client.post("/api/executions", content=body)
    assert r.status_code == 201, r.text
    x = client.get("/api/executions/u").json()["execution"]
    assert (x["name"], x["labels"], x["result"]) == (
        name, {"ключ": "値"}, {"\U0001f600": ["\ufeff", "\u2028"]})
    assert client.get("/api/executions", params={"q": "ünï"}).json()["executions"][0]["id"] == "u"


# -- sizes ------------------------------------------------------------------------

def test_a_huge_content_length_is_413_before_reading(client: TestClient) -> None:
    for length in (str(10**12), str(MAX_BODY + 1)):
        r = client.post("/api/executions", content=b"{}", headers={"content-length": length})
        error = error_of(r, 413, "body_too_large")
        assert error["detail"] == {"max_bytes": MAX_BODY}
        assert str(MAX_BODY) in error["message"]
    assert client.get("/api/executions", params={"meta": "false"}).json()["executions"] == []


def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    r = client.post("/api/ingest", content=b" " * (MAX_BODY + 1))
    error_of(r, 413, "body_too_large")


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"executions": ['
        for _ in range(12):
            yield b" " * (1024 * 1024)

    r = client.post("/api/ingest", content=chunks())
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    error = error_of(r, 413, "body_too_large")
    assert error["detail"] == {"max_bytes": MAX_BODY}
    assert client.get("/api/executions", params={"meta": "false"}).json()["executions"] == []


def test_a_body_of_exactly_the_limit_is_read(client: TestClient) -> None:
    doc = b'{"id": "big", "result": "' + b"x" * 1000 + b'"}'
    body = doc + b" " * (MAX_BODY - len(doc))
    assert len(body) == MAX_BODY
    r = client.post("/api/executions", content=body)
    assert r.status_code == 201, r.text
    assert r.json()["execution"]["result"] == "x" * 1000


# Each documented limit (docs/DESIGN.md, "Limits") answers with its code, the
# field it is about, and a message that names the limit.
LIMITS: list[tuple[str, str, Any, list[Any], str]] = [
    ("POST", "/api/executions/x/events",
     {"events": [{"message": str(i)} for i in range(1001)]}, ["events"], "1000"),
    ("POST", "/api/executions/x/events",
     {"events": [{"message": "é" * (32 * 1024 + 1)}]}, ["events", 0, "message"], "65536"),
    ("POST", "/api/executions/x/interactions",
     {"message": "x" * (64 * 1024 + 1)}, ["message"], "65536"),
    ("POST", "/api/ingest",
     {"executions": [{"id": f"e{i}"} for i in range(1001)]}, ["executions"], "1000"),
    ("POST", "/api/executions", {"labels": {f"k{i}": "v" for i in range(65)}}, ["labels"], "64"),
    ("PATCH", "/api/executions/x", {"labels": {f"k{i}": "v" for i in range(65)}}, ["labels"],
     "64"),
    ("POST", "/api/executions", {"labels": {"k" * 129: "v"}}, ["labels", "k" * 129, "[key]"],
     "128"),
    ("PATCH", "/api/executions/x", {"labels": {"k": "v" * 1025}}, ["labels", "k"], "1024"),
    ("POST", "/api/executions", {"error": "e" * 1_000_001}, ["error"], "1000000"),
    ("POST", "/api/executions/x/tool-calls", {"tool_path": "t" * 513}, ["tool_path"], "512"),
]


@pytest.mark.parametrize(("method", "path", "body", "where", "limit"), LIMITS,
                         ids=[f"{m} {p} {w[-1]}" for m, p, _, w, _ in LIMITS])
def test_each_body_limit_is_a_422_naming_it(seeded: TestClient, method: str, path: str,
                                            body: Any, where: list[Any], limit: str) -> None:
    error = error_of(seeded.request(method, path, json=body), 422, "invalid_body")
    assert error["detail"]["path"] == where
    assert limit in error["message"], error["message"]
    untouched(seeded)


@pytest.mark.parametrize(("path", "limit"), [
    ("/api/executions?limit=201", "1 to 200"), ("/api/executions?limit=0", "1 to 200"),
    ("/api/executions/x/events?limit=1001", "1 to 1000"),
    ("/api/executions/x/events?limit=0", "1 to 1000"),
])
def test_list_limits_are_400_naming_the_range(seeded: TestClient, path: str, limit: str) -> None:
    error = error_of(seeded.get(path), 400, "bad_parameter")
    assert error["detail"] == {"parameter": "limit"}
    assert limit in error["message"]


def test_an_oversized_json_value_is_stored_cut_not_refused(client: TestClient) -> None:
    # Unlike the text fields above, a JSON value over 256 KB is kept as a marker
    # (tests/test_limits.py covers every write path).
    r = client.post("/api/executions", json={"id": "v", "result": ["x" * 300_000]})
    assert r.status_code == 201, r.text[:300]
    result = r.json()["execution"]["result"]
    assert (result["runyard_truncated"], result["bytes"]) == (True, 300_004)
    assert result["preview"] == '["' + "x" * (4096 - 2)


# -- wrong types everywhere ---------------------------------------------------------

def _typed_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if f.annotation is not Any]


# (model, method, path, a valid body, where the model sits in that body)
TYPED: list[tuple[type[BaseModel], str, str, dict[str, Any], list[Any]]] = [
    (ExecutionCreate, "POST", "/api/executions", {}, []),
    (ExecutionPatch, "PATCH", "/api/executions/x", {}, []),
    (ToolCallStart, "POST", "/api/executions/x/tool-calls", {"tool_path": "a"}, []),
    (ToolCallFinish, "PATCH", "/api/executions/x/tool-calls/t", {}, []),
    (InteractionAsk, "POST", "/api/executions/x/interactions", {}, []),
    (InteractionResolve, "POST", "/api/executions/x/interactions/q/resolve",
     {"action": "accept"}, []),
    (EventsAppend, "POST", "/api/executions/x/events", {"events": [{}]}, []),
    (EventIn, "POST", "/api/executions/x/events", {}, ["events", 0]),
    (IngestBatch, "POST", "/api/ingest", {"executions": []}, []),
    (IngestExecution, "POST", "/api/ingest", {}, ["executions", 0]),
    (IngestToolCall, "POST", "/api/ingest", {"tool_path": "a"}, ["executions", 0, "tool_calls", 0]),
    (IngestInteraction, "POST", "/api/ingest", {}, ["executions", 0, "interactions", 0]),
    (IngestEvent, "POST", "/api/ingest", {}, ["executions", 0, "events", 0]),
]


def _place(inner: dict[str, Any], where: list[Any]) -> Any:
    body: Any = inner
    for key in reversed(where):
        body = [body] if isinstance(key, int) else {key: body}
    return body


@pytest.mark.parametrize(("model", "method", "path", "ok", "where"), TYPED,
                         ids=[t[0].__name__ for t in TYPED])
def test_wrong_types_in_every_field_are_422_at_that_field(
        seeded: TestClient, model: type[BaseModel], method: str, path: str, ok: dict[str, Any],
        where: list[Any]) -> None:
    fields = _typed_fields(model)
    assert fields
    for name in fields:
        for wrong in ([1], {"a": [1]}, [None, {}]):
            body = _place({**ok, name: wrong}, where)
            error = error_of(seeded.request(method, path, json=body), 422, "invalid_body")
            paths = [e["path"] for e in error["detail"]["errors"]]
            prefix = [*where, name]
            assert any(p[:len(prefix)] == prefix for p in paths), (name, wrong, paths)
    untouched(seeded)


# -- ids in the path ---------------------------------------------------------------

STRANGE_IDS = [
    # (Not "a/b" or "..": those change which route the path names.)
    "ü", "😀", "مرحبا", "e\u0301", "a b", "%", "\\", "'; DROP TABLE x;--",
    "x" * 129, "x" * 60_000, "a\x00b", "\x00", "\ud800", "a?b", "a#b",
]


@pytest.mark.parametrize("strange", STRANGE_IDS, ids=lambda s: repr(s)[:20])
def test_strange_execution_ids_in_the_path_are_404(seeded: TestClient, strange: str) -> None:
    quoted = quote(strange.encode("utf-8", "surrogatepass"), safe="")
    for method, template, body in EXECUTION_ROUTES:
        path = template.format(x=quoted, t="t", q="q")
        r = seeded.request(method, path, json=body)
        error = error_of(r, 404, "execution_not_found")
        assert set(error["detail"]) == {"execution_id"}, (method, template)
    untouched(seeded)


@pytest.mark.parametrize("strange", ["ü", "a\x00b", "\x00", "x" * 60_000, "\ud800"],
                         ids=lambda s: repr(s)[:20])
def test_strange_part_ids_are_404_for_their_kind(seeded: TestClient, strange: str) -> None:
    quoted = quote(strange.encode("utf-8", "surrogatepass"), safe="")
    r = seeded.patch(f"/api/executions/x/tool-calls/{quoted}", json={})
    error = error_of(r, 404, "tool_call_not_found")
    assert error["detail"]["execution_id"] == "x"
    r = seeded.post(f"/api/executions/x/interactions/{quoted}/resolve", json={"action": "accept"})
    error = error_of(r, 404, "interaction_not_found")
    assert error["detail"]["execution_id"] == "x"
    # An unknown execution is still what is reported first.
    r = seeded.patch(f"/api/executions/nope/tool-calls/{quoted}", json={})
    assert error_of(r, 404, "execution_not_found")["detail"] == {"execution_id": "nope"}
    r = seeded.post(f"/api/executions/nope/interactions/{quoted}/resolve",
                    json={"action": "accept"})
    assert error_of(r, 404, "execution_not_found")["detail"] == {"execution_id": "nope"}
    untouched(seeded)


def test_a_nul_in_a_path_id_is_reported_back_intact(client: TestClient) -> None:
    error = error_of(client.get("/api/executions/a%00b"), 404, "execution_not_found")
    assert error["detail"] == {"execution_id": "a\x00b"}


# -- query parameters ----------------------------------------------------------------

@pytest.mark.parametrize(("path", "query", "parameter"), [
    ("/api/executions", "q=a%00", "q"),
    ("/api/executions", "status=%00", "status"),
    ("/api/executions", "trigger=cli%00", "trigger"),
    ("/api/executions", "tool=a.%00", "tool"),
    ("/api/executions", "label=k%00=v", "label"),
    ("/api/executions", "label=k=%00", "label"),
    ("/api/executions", "from=%00", "from"),
    ("/api/executions", "sort=%00", "sort"),
    ("/api/executions", "limit=1%00", "limit"),
    ("/api/executions", "cursor=%00", "cursor"),
    ("/api/executions", "meta=%00", "meta"),
    ("/api/executions", "%00=1", "\x00"),
    ("/api/executions/x/events", "level=%00", "level"),
    ("/api/executions/x/events", "type=log%00", "type"),
    ("/api/executions/x/events", "after_seq=%00", "after_seq"),
    ("/api/executions/x/events", "limit=%00", "limit"),
    ("/api/executions/x/events", "%00", "\x00"),
    ("/api/executions/x/tool-calls", "%00=", "\x00"),
    ("/api/executions/x/interactions", "a=%00", "a"),
])
def test_nul_in_query_parameters_is_400_naming_them(seeded: TestClient, path: str, query: str,
                                                    parameter: str) -> None:
    error = error_of(seeded.get(f"{path}?{query}"), 400, "bad_parameter")
    assert error["detail"] == {"parameter": parameter}


def test_strange_but_harmless_query_values_are_just_filters(seeded: TestClient) -> None:
    for query in ("q=%FF", "q=%ED%A0%80", "q=%25%5F%5C", "tool=%5B", "tool=*%5D*", "tool=%5C*",
                  "label=%22%5D=1", "label=%24.a=1", "label=%5B0%5D=1", "trigger=%27",
                  "q=" + "%F0%9F%98%80" * 200):
        r = seeded.get(f"/api/executions?{query}")
        assert r.status_code == 200, (query, r.text)
        assert r.json()["executions"] == [], query


def test_label_parameters_are_capped_like_the_other_sets(seeded: TestClient) -> None:
    # Each label is one more condition in every query of the list; past a few
    # hundred SQLite refuses the statement (a 500 before the cap).
    r = seeded.get("/api/executions?" + "&".join(f"label=k{i}=v" for i in range(100)))
    assert r.status_code == 200, r.text
    assert r.json()["executions"] == []
    r = seeded.get("/api/executions?" + "&".join(f"label=k{i}=v" for i in range(1000)))
    error = error_of(r, 400, "bad_parameter")
    assert error["detail"] == {"parameter": "label"}
    assert "100" in error["message"]


def _cursor(*parts: Any) -> str:
    raw = json.dumps(list(parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("forged", ["a\x00", "\ud800"], ids=["nul", "surrogate"])
def test_a_forged_cursor_with_an_unstorable_id_is_400(seeded: TestClient, forged: str) -> None:
    # The id of a cursor reaches the query: one no database can hold was a 500.
    for sort, value in (("created_at:desc", 1), ("duration_ms:desc", None)):
        r = seeded.get("/api/executions",
                       params={"cursor": _cursor(sort, value, forged), "sort": sort})
        error = error_of(r, 400, "bad_parameter")
        assert error["detail"] == {"parameter": "cursor"}


# -- methods and unknown routes -------------------------------------------------------

def test_unknown_routes_and_methods_answer_in_the_error_shape(seeded: TestClient) -> None:
    for method, path, status, code in [
        ("GET", "/api/nothing", 404, "not_found"),
        ("GET", "/api/executions/x/nothing", 404, "not_found"),
        ("DELETE", "/api/executions/x", 405, "method_not_allowed"),
        ("PUT", "/api/executions", 405, "method_not_allowed"),
        ("POST", "/api/executions/x", 405, "method_not_allowed"),
        ("GET", "/api/ingest", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
    ]:
        error_of(seeded.request(method, path), status, code)


# -- random bodies -----------------------------------------------------------------

# Text with NUL, lone surrogates, controls and astral characters.
_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_scalars = (st.none() | st.booleans() | st.integers() | _text
            | st.floats(allow_nan=False, allow_infinity=False))
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)
# Field names of the write models, so many bodies get past the first check.
_names = sorted({name for m in (ExecutionCreate, ExecutionPatch, ToolCallStart, InteractionAsk,
                                InteractionResolve, EventIn, IngestInteraction, IngestExecution)
                 for name in m.model_fields})
_objects = st.dictionaries(st.sampled_from(_names) | _text, _json, max_size=6)
_anything = (
    _objects
    | st.builds(lambda e: {"events": e}, st.lists(_objects, max_size=3))
    | st.builds(lambda x: {"executions": x}, st.lists(
        st.builds(lambda o, t, e: {**o, "tool_calls": t, "events": e}, _objects,
                  st.lists(_objects, max_size=2), st.lists(_objects, max_size=2)),
        max_size=2))
    | _json
)


def _shaped(required: dict[str, Any], optional: dict[str, Any]) -> Any:
    return st.fixed_dictionaries(required, optional=optional)


# Bodies of the right shape whose free-form values (result, args, data, ...) and
# texts are random: these reach the database and come back out of it.
_event = _shaped({}, {"message": _text, "data": _json,
                      "level": st.sampled_from(["debug", "info", "warn", "error"]),
                      "type": st.sampled_from(["log", "stdout", "stderr", "artifact"])})
_SHAPED: dict[str, Any] = {
    "POST /api/executions": _shaped({}, {
        "name": _text, "code": _text, "error": _text, "result": _json, "trigger_meta": _json,
        "trigger_kind": _text, "labels": st.dictionaries(_text, _text, max_size=3)}),
    "PATCH /api/executions/x": _shaped({}, {
        "name": _text, "error": _text, "result": _json, "progress_stage": _text,
        "labels": st.dictionaries(_text, _text | st.none(), max_size=3)}),
    "POST /api/executions/x/tool-calls": _shaped({"tool_path": _text}, {
        "args": _json, "result": _json, "error": _text}),
    "PATCH /api/executions/x/tool-calls/t": _shaped({}, {"result": _json, "error": _text}),
    "POST /api/executions/x/interactions": _shaped({}, {"message": _text, "request": _json}),
    "POST /api/executions/x/interactions/q/resolve": _shaped(
        {"action": st.sampled_from(["accept", "decline", "cancel"])}, {"response": _json}),
    "POST /api/executions/x/events": _shaped({"events": st.lists(_event, min_size=1,
                                                                 max_size=3)}, {}),
    "POST /api/ingest": _shaped({"executions": st.lists(_shaped({}, {
        "name": _text, "result": _json, "labels": st.dictionaries(_text, _text, max_size=2),
        "tool_calls": st.lists(_shaped({"tool_path": _text}, {"args": _json}), max_size=2),
        "interactions": st.lists(_shaped({}, {"message": _text, "request": _json}),
                                 max_size=2),
        "events": st.lists(_event, max_size=2)}), max_size=2)}, {}),
}


@pytest.mark.parametrize(("method", "path", "ok"), WRITE_ROUTES, ids=ROUTE_IDS)
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_bodies_never_cause_a_500(seeded: TestClient, method: str, path: str,
                                         ok: dict[str, Any], data: st.DataObject) -> None:
    body = data.draw(_SHAPED[f"{method} {path}"] | _anything, label="body")
    raw = json.dumps(body).encode("ascii")
    r = seeded.request(method, path, content=raw)
    not_a_crash(r)
    if r.status_code < 300:
        # What was stored must read back: every page that lists it stays up.
        for read in ("/api/executions", "/api/executions/x", "/api/executions/x/events",
                     "/api/executions/x/tool-calls", "/api/executions/x/interactions"):
            not_a_crash(seeded.get(read))


def test_a_client_that_hangs_up_mid_body_is_no_server_error(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """A hang-up while the body is read is the client's doing: no traceback is
    logged for it (a busy server would spend its time logging them)."""
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "http.request", "body": b'{"name": "x"', "more_body": True},
                     {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/executions", "raw_path": b"",
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
             "app": client.app}
    with caplog.at_level(logging.DEBUG, logger="runyard"):
        client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr]
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert client.get("/api/executions").json()["executions"] == []
