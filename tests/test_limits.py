"""Per-client limits (request rate, open streams) and oversized JSON values cut
with a marker on every write path (app.limits)."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.principal import LOCAL, SCOPE_KEY, Principal
from app.factory import create_app
from app.limits.rate import Buckets, RateLimitMiddleware
from app.limits.streams import StreamLimitMiddleware
from app.limits.values import MAX_VALUE_BYTES, PREVIEW_BYTES, cut_value, is_cut
from app.settings import Settings
from tests.api_support import error_of
from tests.servers import running_server

HX = {"HX-Request": "true"}


# -- helpers ------------------------------------------------------------------

class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _as_token(app: ASGIApp) -> ASGIApp:
    """Stands in for the auth middleware: ``X-Token: <id>`` acts as that token."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = dict(scope["headers"]).get(b"x-token")
            if token:
                scope = {**scope, SCOPE_KEY: Principal(roles=LOCAL.roles,
                                                        token_id=token.decode(), via="bearer")}
        await app(scope, receive, send)

    return wrapper


def _tiny_app(handler: Callable[[Request], Any] | None = None) -> Starlette:
    async def ok(request: Request) -> Response:
        if handler is not None:
            return await handler(request)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/{path:path}", ok)])


def _rate_limited(per_s: float, burst: int, clock: Callable[[], float] = time.monotonic,
                  ) -> TestClient:
    return TestClient(_as_token(RateLimitMiddleware(_tiny_app(), per_s, burst, clock=clock)))


def local_client(settings: Settings) -> TestClient:
    """The whole app as a loopback client sees it (no token exists)."""
    return TestClient(create_app(settings), base_url="http://127.0.0.1",
                      client=("127.0.0.1", 50000))


def marker_of(value: Any) -> dict[str, Any]:
    """The marker a value over the limit must be stored as."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return {"runyard_truncated": True, "bytes": len(text),
            "preview": text[:PREVIEW_BYTES].decode("utf-8", "ignore")}


# -- request rate -------------------------------------------------------------

def test_a_burst_then_429_with_retry_after() -> None:
    clock = FakeClock()
    client = _rate_limited(per_s=0.25, burst=3, clock=clock)
    assert [client.get("/api/x").status_code for _ in range(3)] == [200, 200, 200]
    r = client.get("/api/x")
    error = error_of(r, 429, "rate_limited")
    # One request refills in 1 / 0.25 s.
    assert r.headers["retry-after"] == "4"
    assert error["detail"] == {"limit_per_s": 0.25, "burst": 3, "retry_after_s": 4}
    assert "0.25 per second" in error["message"] and "bursts of 3" in error["message"]
    assert "retry in 4 s" in error["message"]
    clock.now += 3.0
    assert client.get("/api/x").headers["retry-after"] == "1"
    clock.now += 1.0
    assert client.get("/api/x").status_code == 200
    assert client.get("/api/x").status_code == 429


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    clock = FakeClock()
    client = _rate_limited(per_s=1000, burst=1, clock=clock)
    assert client.get("/a").status_code == 200
    r = client.get("/a")
    assert (r.status_code, r.headers["retry-after"]) == (429, "1")


def test_separate_tokens_and_addresses_do_not_share_a_bucket() -> None:
    clock = FakeClock()
    app = _as_token(RateLimitMiddleware(_tiny_app(), 1, 2, clock=clock))
    here = TestClient(app, client=("10.0.0.1", 5000))
    there = TestClient(app, client=("10.0.0.2", 5000))
    for _ in range(2):
        assert here.get("/a").status_code == 200
    assert here.get("/a").status_code == 429
    assert there.get("/a").status_code == 200
    # A token is one client wherever it connects from; without one, the address.
    for _ in range(2):
        assert here.get("/a", headers={"X-Token": "t1"}).status_code == 200
    assert there.get("/a", headers={"X-Token": "t1"}).status_code == 429
    assert there.get("/a", headers={"X-Token": "t2"}).status_code == 200
    assert there.get("/a").status_code == 200
    assert there.get("/a").status_code == 429


def test_healthz_and_static_are_not_limited() -> None:
    client = _rate_limited(per_s=1, burst=1, clock=FakeClock())
    for _ in range(20):
        assert client.get("/healthz").status_code == 200
        assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/executions").status_code == 200
    assert client.get("/api/executions").status_code == 429
    # Not a prefix match on the name: /healthz/x and /staticfile are ordinary paths.
    assert client.get("/healthzz").status_code == 429
    assert client.get("/staticfile").status_code == 429


@pytest.mark.parametrize(("per_s", "burst"), [(0, 200), (50, 0)])
def test_zero_turns_the_rate_limit_off(per_s: float, burst: int) -> None:
    client = _rate_limited(per_s=per_s, burst=burst)
    assert all(client.get("/a").status_code == 200 for _ in range(300))


def test_idle_buckets_are_forgotten_and_keys_are_capped() -> None:
    clock = FakeClock()
    buckets = Buckets(per_s=10, burst=5, max_keys=100, clock=clock)
    for i in range(50):
        buckets.take(f"k{i}")
    assert len(buckets) == 50
    # Full again after burst / per_s = 0.5 s: the same as never seen, so dropped.
    clock.now += 0.5
    assert buckets.take("new") == 0.0
    assert len(buckets) == 1
    for i in range(500):
        buckets.take(f"k{i}")
    assert len(buckets) == 100
    # A bucket in use is kept: spending it down still counts.
    for _ in range(5):
        assert buckets.take("hot") == 0.0
    assert buckets.take("hot") == pytest.approx(0.1)


def test_the_app_limits_requests_and_recovers(database_url: str) -> None:
    # Slow enough to refill (2 s a request) that a busy machine cannot refill the
    # bucket between the requests below.
    settings = Settings(database_url=database_url, rate_limit_per_s=0.5, rate_limit_burst=3)
    with local_client(settings) as client:
        codes = [client.get("/api/executions/none").status_code for _ in range(3)]
        assert codes == [404, 404, 404]
        r = client.post("/api/executions", json={"id": "late"})
        error = error_of(r, 429, "rate_limited")
        retry = int(r.headers["retry-after"])
        assert retry in (1, 2) and "0.5 per second" in error["message"]
        assert client.get("/healthz").status_code == 200
        time.sleep(retry + 0.1)
        # Through again after the wait, and the refused create wrote nothing.
        error_of(client.get("/api/executions/late"), 404, "execution_not_found")


def test_the_page_says_it_is_rate_limited_in_html(database_url: str) -> None:
    # A person reloading too fast reads the page's own error, not a JSON
    # document; the API's paths keep the JSON error (the test above).
    settings = Settings(database_url=database_url, rate_limit_per_s=0.5, rate_limit_burst=2)
    with local_client(settings) as client:
        assert [client.get("/").status_code for _ in range(2)] == [200, 200]
        page = client.get("/?status=failed")
        assert page.status_code == 429
        assert page.headers["content-type"].startswith("text/html")
        assert int(page.headers["retry-after"]) in (1, 2, 3, 4)
        text = html.unescape(page.text)
        assert "Too many requests: the limit is 0.5 per second (bursts of 2); retry in" in text
        assert "<!doctype html>" in page.text and 'role="alert"' in page.text
        # Trying again asks for the same view; a path of the form //host
        # (refused before routing, so any path) stays a link on this site.
        assert '<a class="btn" href="/?status=failed">Try again</a>' in page.text
        other = client.get("http://127.0.0.1//evil.example/x?y=1")
        assert other.status_code == 429 and 'href="/evil.example/x?y=1"' in other.text
        assert 'href="//' not in other.text
        # An htmx swap gets the error partial for its target, and the refused
        # view does not become the address bar's URL.
        fragment = client.get("/runs?status=failed", headers={
            **HX, "HX-Target": "view", "HX-Current-URL": "http://127.0.0.1//?x=1"})
        assert fragment.status_code == 429
        assert fragment.headers["hx-push-url"] == "false"
        assert 'id="view"' in fragment.text and 'data-code="rate_limited"' in fragment.text
        assert 'href="/?x=1"' in fragment.text and "<!doctype" not in fragment.text
        # The API's paths under the same limit still answer JSON.
        error_of(client.get("/api/executions"), 429, "rate_limited")


# -- streams per client -------------------------------------------------------

def _open_when_free(stack: ExitStack, client: httpx.Client, url: str,
                    within_s: float = 10.0) -> httpx.Response:
    """Open a stream, retrying while the client is at its limit (the server sees a
    closed stream's disconnect a moment after the client closes it)."""
    deadline = time.monotonic() + within_s
    while True:
        response = stack.enter_context(client.stream("GET", url))
        if response.status_code == 200:
            return response
        response.read()
        assert time.monotonic() < deadline, f"no stream slot came free: {response.text}"
        response.close()
        time.sleep(0.05)


def test_the_stream_count_goes_down_however_a_stream_ends() -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("broken stream")

    middleware = StreamLimitMiddleware(_tiny_app(boom), 1)
    client = TestClient(_as_token(middleware), raise_server_exceptions=False)
    for _ in range(3):
        assert client.get("/api/stream").status_code == 500
    assert dict(middleware.open) == {}
    # Other paths are not streams and are not counted.
    assert client.get("/api/executions").status_code == 500
    assert dict(middleware.open) == {}


def test_streams_are_capped_per_client(database_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_MAX_STREAMS_PER_CLIENT", "3")
    with running_server(database_url) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/api/executions", json={"id": "r1"}).status_code == 201
        with ExitStack() as stack:
            streams = [_open_when_free(stack, client, url) for url in (
                "/api/stream", "/api/stream?status=failed", "/api/executions/r1/stream")]
            assert [s.status_code for s in streams] == [200, 200, 200]
            for url in ("/api/stream", "/api/executions/r1/stream"):
                error = error_of(client.get(url), 429, "too_many_streams")
                assert error["detail"] == {"max_streams": 3}
                assert "at most 3" in error["message"]
            # Ordinary requests are not streams.
            assert client.get("/api/executions/r1").status_code == 200
            # Closing one frees its slot.
            streams[0].close()
            _open_when_free(stack, client, "/api/stream?status=running")
            error_of(client.get("/api/stream"), 429, "too_many_streams")
            # A run stream that ends by itself (its run finished) frees its slot too.
            assert client.patch("/api/executions/r1",
                                json={"status": "completed"}).status_code == 200
            assert "event: end" in list(streams[2].iter_lines())
            _open_when_free(stack, client, "/api/stream?status=completed")
            error_of(client.get("/api/stream"), 429, "too_many_streams")


def test_cut_value_keeps_values_up_to_the_limit() -> None:
    exact = "x" * (MAX_VALUE_BYTES - 2)  # with its quotes: exactly the limit
    assert cut_value(exact) == exact
    assert cut_value(exact + "x") == marker_of(exact + "x")
    for small in (None, True, 0, 1.5, "text", [1, 2], {"a": {"b": [None]}}):
        assert cut_value(small) == small
    # Escapes count: 50,000 control characters are 300,002 bytes of JSON.
    control = "\x01" * 50_000
    assert cut_value(control)["bytes"] == 300_002


def test_the_preview_is_4_kb_cut_at_a_character() -> None:
    value = {"text": "é" * 200_000}
    marker = cut_value(value)
    assert is_cut(marker) and marker == marker_of(value)
    preview = marker["preview"]
    assert preview.startswith('{"text":"éé')
    assert PREVIEW_BYTES - 2 < len(preview.encode()) <= PREVIEW_BYTES
    assert not is_cut({"runyard_truncated": True}) and not is_cut("runyard_truncated")


BIG = {"blob": "x" * 300_000, "n": 1}


@pytest.fixture
def app_client(database_url: str) -> Iterator[TestClient]:
    with local_client(Settings(database_url=database_url)) as client:
        yield client


def _ok(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    body: dict[str, Any] = r.json()
    return body


def test_every_api_write_path_stores_big_values_cut(app_client: TestClient) -> None:
    c, cut = app_client, marker_of(BIG)
    run = _ok(c.post("/api/executions", json={"id": "x", "result": BIG, "trigger_meta": BIG}))
    assert run["execution"]["result"] == cut and run["execution"]["trigger_meta"] == cut
    _ok(c.post("/api/executions", json={"id": "y"}))
    patched = _ok(c.patch("/api/executions/y", json={"result": BIG}), 200)
    assert patched["execution"]["result"] == cut
    _ok(c.post("/api/executions/y/tool-calls", json={"id": "t", "tool_path": "a.b",
                                                       "args": BIG}))
    _ok(c.patch("/api/executions/y/tool-calls/t", json={"result": [BIG]}), 200)
    _ok(c.post("/api/executions/y/events", json={"events": [
        {"message": "small", "data": {"k": 1}}, {"message": "big", "data": BIG}]}))
    _ok(c.post("/api/executions/y/interactions", json={"id": "q", "request": BIG}))
    _ok(c.post("/api/executions/y/interactions/q/resolve",
               json={"action": "accept", "response": BIG}), 200)
    _ok(c.post("/api/ingest", json={"executions": [{
        "id": "z", "result": BIG, "trigger_meta": {"ok": True},
        "tool_calls": [{"id": "zt", "tool_path": "a.b", "args": BIG, "result": "fine"}],
        "interactions": [{"id": "zq", "request": BIG, "status": "resolved",
                          "action": "accept", "response": BIG}],
        "events": [{"message": "m", "data": BIG}]}]}), 200)

    # Read back: the marker is what is stored, whole values stay whole.
    assert c.get("/api/executions/x").json()["execution"]["trigger_meta"] == cut
    y = c.get("/api/executions/y").json()["execution"]
    assert y["result"] == cut
    (call,) = c.get("/api/executions/y/tool-calls").json()["tool_calls"]
    assert (call["args"], call["result"]) == (cut, marker_of([BIG]))
    events = c.get("/api/executions/y/events", params={"type": "log"}).json()["events"]
    assert [(e["message"], e["data"]) for e in events] == [("small", {"k": 1}), ("big", cut)]
    (asked,) = c.get("/api/executions/y/interactions").json()["interactions"]
    assert (asked["request"], asked["response"]) == (cut, cut)
    z = c.get("/api/executions/z").json()["execution"]
    assert (z["result"], z["trigger_meta"]) == (cut, {"ok": True})
    (zcall,) = c.get("/api/executions/z/tool-calls").json()["tool_calls"]
    assert (zcall["args"], zcall["result"]) == (cut, "fine")
    (zq,) = c.get("/api/executions/z/interactions").json()["interactions"]
    assert (zq["request"], zq["response"]) == (cut, cut)
    zlogs = c.get("/api/executions/z/events", params={"type": "log"}).json()["events"]
    assert [e["data"] for e in zlogs] == [cut]


def test_the_page_says_a_value_was_cut(app_client: TestClient) -> None:
    c = app_client
    _ok(c.post("/api/executions", json={"id": "x", "status": "completed", "result": BIG}))
    _ok(c.post("/api/executions/x/tool-calls", json={"id": "t", "tool_path": "a.b",
                                                       "args": BIG}))
    _ok(c.post("/api/executions/x/events", json={"events": [{"message": "m", "data": BIG}]}))
    notice = f"cut: {marker_of(BIG)['bytes']:,} bytes, first 4 KB shown"
    drawer = c.get("/?run=x", headers={**HX, "HX-Target": "drawer"}).text
    assert notice in drawer and '{"blob":"xxx' in html.unescape(drawer)
    assert len(drawer) < 64 * 1024
    assert notice in c.get("/runs/x/tool-calls/t").text
    console = c.get("/?run=x&tab=events", headers={**HX, "HX-Target": "drawer"}).text
    assert notice in console
    full = c.get("/runs/x/value", params={"part": "execution", "ref": "result"})
    assert full.text.startswith(notice)


# -- OTLP ----------------------------------------------------------------------

def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _big_array() -> AnyValue:
    # One string attribute is cut at 64 KB by the mapping; an array of them is not.
    return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="y" * 60_000)
                                                   for _ in range(6)]))


def _otlp_request(trace: bytes) -> bytes:
    root = Span(trace_id=trace, span_id=b"\x01" * 8, name="root",
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_001_000_000_000)
    root.events.add(name="note", time_unix_nano=1_700_000_000_500_000_000,
                    attributes=[_kv(f"k{i}", AnyValue(string_value="z" * 60_000))
                                for i in range(6)])
    child = Span(trace_id=trace, span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8,
                 name="call", start_time_unix_nano=1_700_000_000_100_000_000,
                 end_time_unix_nano=1_700_000_000_200_000_000,
                 attributes=[_kv("gen_ai.tool.name", AnyValue(string_value="big.tool")),
                             _kv("runyard.args", _big_array()),
                             _kv("runyard.result", AnyValue(string_value='{"ok": true}'))])
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add()
    spans.resource.attributes.extend([_kv("service.name", AnyValue(string_value="svc")),
                                      _kv("huge", _big_array())])
    spans.scope_spans.add().spans.extend([root, child])
    return request.SerializeToString()


def test_otlp_values_are_cut_and_resending_changes_nothing(app_client: TestClient) -> None:
    c, trace = app_client, bytes(range(1, 17))
    body = _otlp_request(trace)
    headers = {"content-type": "application/x-protobuf"}
    assert c.post("/v1/traces", content=body, headers=headers).status_code == 200
    eid = f"otel-{trace.hex()}"
    run = c.get(f"/api/executions/{eid}").json()["execution"]
    meta = run["trigger_meta"]
    # The ids the store recognises a re-sent root by stay whole; the rest is cut.
    assert meta["otlp"] == {"trace_id": trace.hex(), "span_id": "01" * 8}
    assert is_cut(meta["cut"]) and meta["cut"]["bytes"] > MAX_VALUE_BYTES
    assert set(meta) == {"otlp", "cut"}
    (call,) = c.get(f"/api/executions/{eid}/tool-calls").json()["tool_calls"]
    assert call["args"] == marker_of(["y" * 60_000] * 6)
    assert call["result"] == {"ok": True}
    (note,) = [e for e in c.get(f"/api/executions/{eid}/events").json()["events"]
               if e["message"] == "note"]
    assert is_cut(note["data"]) and note["data"]["preview"].startswith('{"span_id":"')
    before = c.get(f"/api/executions/{eid}/events", params={"limit": 1000}).json()
    assert c.post("/v1/traces", content=body, headers=headers).status_code == 200
    assert c.get(f"/api/executions/{eid}/events", params={"limit": 1000}).json() == before
    assert len(c.get(f"/api/executions/{eid}/tool-calls").json()["tool_calls"]) == 1
