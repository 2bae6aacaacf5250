"""Admission control (app.limits.admission): at most N requests of a kind in the
app at once; one more waits its turn briefly, then is a 503 ``overloaded``
with ``Retry-After``."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from typing import Any

import httpx
import pytest
from google.rpc.status_pb2 import Status
from starlette.types import Message, Receive, Scope, Send

from app.factory import create_app
from app.limits.admission import AdmissionMiddleware
from app.settings import Settings
from tests.api_support import error_of
from tests.servers import running_server

# -- the middleware on its own --------------------------------------------------


class Held:
    """An app that answers 200, except that a request with an ``X-Hold``
    header waits until ``release``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        if b"x-hold" in dict(scope["headers"]):
            await self.gate.wait()
        if scope["path"] == "/boom":
            raise RuntimeError("broken route")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


HOLD = {"X-Hold": "1"}
# A request of each kind (the role it needs).
WRITE, READ, EXEC = ("POST", "/api/executions"), ("GET", "/runs"), ("POST", "/api/jobs")


def _scope(method: str, path: str, app: Any = None, headers: dict[str, str] | None = None,
           ) -> Scope:
    scope: Scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(k.lower().encode(), v.encode())
                    for k, v in {"host": "127.0.0.1:8000", **(headers or {})}.items()]}
    if app is not None:
        scope["app"] = app
    return scope


async def _call(app: Any, scope: Scope) -> tuple[int, dict[str, str], bytes]:
    """Call ``app`` and collect its status, headers and body."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def _until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _hold(admission: AdmissionMiddleware, inner: Held, *requests: tuple[str, str],
                ) -> list[asyncio.Task[tuple[int, dict[str, str], bytes]]]:
    """Start ``requests`` held in the app; return once they are all in it."""
    before = inner.entered
    tasks = [asyncio.create_task(_call(admission, _scope(method, path, headers=HOLD)))
             for method, path in requests]
    await _until(lambda: inner.entered == before + len(requests))
    return tasks


def test_one_over_the_cap_waits_then_is_refused_and_never_reaches_the_app() -> None:
    async def scenario() -> None:
        inner = Held()
        admission = AdmissionMiddleware(inner, max_in_flight=2, wait_s=0.05)
        held = await _hold(admission, inner, WRITE, WRITE)
        assert admission.in_flight["write"] == 2

        started = time.monotonic()
        status, headers, body = await _call(admission, _scope("POST", "/api/ingest"))
        assert time.monotonic() - started >= 0.05
        assert status == 503 and headers["retry-after"] == "1"
        error = json.loads(body)["error"]
        assert error["code"] == "overloaded"
        assert error["detail"] == {"kind": "write", "max_in_flight": 2, "retry_after_s": 1}
        assert error["message"] == ("the server is busy: it is answering 2 write requests, "
                                    "as many as it takes at once; retry in 1 s")
        assert inner.entered == 2          # the refused one never reached the app

        # Other kinds have their own caps: reading and running jobs go on.
        assert (await _call(admission, _scope("GET", "/api/executions")))[0] == 200
        assert (await _call(admission, _scope(*EXEC)))[0] == 200
        inner.gate.set()
        assert [(await t)[0] for t in held] == [200, 200]
        assert admission.in_flight["write"] == 0
        assert (await _call(admission, _scope("POST", "/api/ingest")))[0] == 200

    asyncio.run(scenario())


def test_a_request_over_the_cap_gets_the_first_slot_that_comes_free() -> None:
    async def scenario() -> None:
        inner = Held()
        admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=10)
        first = (await _hold(admission, inner, WRITE))[0]
        queued = [asyncio.create_task(_call(admission, _scope(*WRITE))) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert inner.entered == 1 and not any(t.done() for t in queued)
        inner.gate.set()
        assert [(await t)[0] for t in (first, *queued)] == [200, 200, 200]
        assert admission.in_flight["write"] == 0

    asyncio.run(scenario())


def test_the_count_goes_down_however_a_request_ends() -> None:
    async def scenario() -> None:
        inner = Held()
        admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=10)
        with pytest.raises(RuntimeError, match="broken route"):
            await _call(admission, _scope("POST", "/boom"))
        assert admission.in_flight["read"] == 0 and admission.in_flight["write"] == 0
        # A client that hangs up, in the app or waiting for a slot, arrives
        # as cancellation.
        held = (await _hold(admission, inner, WRITE))[0]
        waiting = asyncio.create_task(_call(admission, _scope(*WRITE, headers=HOLD)))
        await asyncio.sleep(0.01)
        for task in (held, waiting):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert admission.in_flight["write"] == 0
        inner.gate.set()
        assert (await _call(admission, _scope(*WRITE)))[0] == 200

    asyncio.run(scenario())


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_queue_that_has_stood_too_long_gets_the_short_wait() -> None:
    async def scenario() -> None:
        inner, clock = Held(), Clock()
        admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=10, busy_wait_s=0.05,
                                        busy_after_s=2, clock=clock)
        held = await _hold(admission, inner, WRITE)
        first = asyncio.create_task(_call(admission, _scope(*WRITE)))   # the queue starts
        await _until(lambda: admission.waiting["write"] == 1)

        clock.now = 1.9        # a burst so far: the long wait still
        second = asyncio.create_task(_call(admission, _scope(*WRITE)))
        await asyncio.sleep(0.1)
        assert not second.done()

        clock.now = 2.0        # the queue has stood for 2 s: overload
        started = time.monotonic()
        assert (await _call(admission, _scope(*WRITE)))[0] == 503
        assert time.monotonic() - started < 1
        # Those that came before it keep the wait they came with.
        assert not first.done() and not second.done()
        inner.gate.set()
        assert [(await t)[0] for t in (*held, first, second)] == [200, 200, 200]
        assert admission.waiting["write"] == 0

        # Served empty, the queue is a new one: the next waits long again.
        clock.now = 5.0
        inner.gate = asyncio.Event()
        held = await _hold(admission, inner, WRITE)
        third = asyncio.create_task(_call(admission, _scope(*WRITE)))
        await asyncio.sleep(0.1)    # twice the short wait
        inner.gate.set()
        assert [(await t)[0] for t in (*held, third)] == [200, 200]

    asyncio.run(scenario())


def test_a_slot_found_free_ends_a_standing_queue() -> None:
    async def scenario() -> None:
        inner, clock = Held(), Clock()
        admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=0.3, busy_wait_s=0.01,
                                        busy_after_s=1, clock=clock)
        held = await _hold(admission, inner, WRITE)
        assert (await _call(admission, _scope(*WRITE)))[0] == 503   # after the long wait
        clock.now = 1.5
        started = time.monotonic()
        assert (await _call(admission, _scope(*WRITE)))[0] == 503   # standing: the short one
        assert time.monotonic() - started < 0.2

        inner.gate.set()
        await asyncio.gather(*held)
        assert (await _call(admission, _scope(*WRITE)))[0] == 200   # a slot free at once
        inner.gate = asyncio.Event()
        held = await _hold(admission, inner, WRITE)
        clock.now = 1.6
        waiting = asyncio.create_task(_call(admission, _scope(*WRITE)))
        await asyncio.sleep(0.1)    # ten times the short wait, within the long one
        inner.gate.set()
        assert [(await t)[0] for t in (*held, waiting)] == [200, 200]

    asyncio.run(scenario())


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/stream"), ("GET", "/api/executions/r1/stream"), ("GET", "/healthz"),
    ("GET", "/static/app.css"), ("POST", "/signin"), ("POST", "/signout")])
def test_streams_and_public_paths_are_not_counted(method: str, path: str) -> None:
    async def scenario() -> None:
        inner = Held()
        admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=0.01)
        held = await _hold(admission, inner, READ, WRITE, EXEC)   # every kind full
        assert (await _call(admission, _scope(method, path)))[0] == 200
        assert (await _call(admission, _scope("GET", "/api/executions")))[0] == 503
        inner.gate.set()
        await asyncio.gather(*held)

    asyncio.run(scenario())


def test_the_same_middleware_serves_one_loop_after_another() -> None:
    # An app served twice (a test client opened twice) runs on two loops; a
    # semaphore that waited on the first must not be reused on the second.
    inner = Held()
    admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=0.01)

    async def overload() -> int:
        inner.gate = asyncio.Event()
        held = await _hold(admission, inner, WRITE)
        status = (await _call(admission, _scope(*WRITE)))[0]
        inner.gate.set()
        await asyncio.gather(*held)
        return status

    assert [asyncio.run(overload()) for _ in range(2)] == [503, 503]


def test_zero_turns_admission_control_off() -> None:
    async def scenario() -> None:
        inner = Held()
        admission = AdmissionMiddleware(inner, max_in_flight=0, wait_s=0)
        held = await _hold(admission, inner, *[WRITE] * 50)
        inner.gate.set()
        assert {(await t)[0] for t in held} == {200}

    asyncio.run(scenario())


def test_refusals_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]

    async def scenario() -> None:
        inner = Held()
        admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=0.001,
                                        clock=lambda: now[0])
        held = await _hold(admission, inner, READ, WRITE)
        for _ in range(5):
            await _call(admission, _scope("POST", "/api/ingest"))
        now[0] += 11
        await _call(admission, _scope("GET", "/runs"))
        inner.gate.set()
        await asyncio.gather(*held)

    with caplog.at_level(logging.WARNING, logger="runyard.limits"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    # The first refusal is told at once; the next line sums up the rest.
    assert lines == [
        "overloaded: refused 1 write request(s) with 503 (at most 1 of a kind at once; "
        "RUNYARD_MAX_IN_FLIGHT)",
        "overloaded: refused 1 read, 4 write request(s) with 503 (at most 1 of a kind at "
        "once; RUNYARD_MAX_IN_FLIGHT)"]


def test_the_page_and_otlp_get_their_own_answers(sqlite_url: str) -> None:
    app = create_app(Settings(database_url=sqlite_url, demo=False))

    async def scenario() -> None:
        inner = Held()
        admission = AdmissionMiddleware(inner, max_in_flight=1, wait_s=0.001)
        held = await _hold(admission, inner, READ, WRITE)

        status, headers, body = await _call(admission, _scope("GET", "/runs", app))
        text = html.unescape(body.decode())
        assert status == 503 and headers["retry-after"] == "1"
        assert headers["content-type"].startswith("text/html")
        assert "<!doctype html>" in text and 'role="alert"' in text
        assert ("The server is busy: it is answering 1 read requests, as many as it takes "
                "at once; retry in 1 s") in text

        status, headers, body = await _call(admission, _scope(
            "GET", "/runs", app, {"HX-Request": "true", "HX-Target": "view"}))
        text = body.decode()
        assert status == 503 and headers["hx-push-url"] == "false"
        assert 'data-code="overloaded"' in text and "<!doctype" not in text

        # OTLP/HTTP: a google.rpc.Status UNAVAILABLE in the request's encoding.
        status, headers, body = await _call(admission, _scope(
            "POST", "/v1/traces", app, {"Content-Type": "application/x-protobuf"}))
        assert status == 503 and headers["retry-after"] == "1"
        assert headers["content-type"] == "application/x-protobuf"
        answer = Status.FromString(body)
        assert answer.code == 14 and "the server is busy" in answer.message
        status, headers, body = await _call(admission, _scope(
            "POST", "/v1/traces", app, {"Content-Type": "application/json"}))
        assert status == 503 and json.loads(body)["code"] == 14
        inner.gate.set()
        await asyncio.gather(*held)

    asyncio.run(scenario())


# -- a real server --------------------------------------------------------------

@contextmanager
def _held_posts(base: str, count: int, path: str = "/api/executions") -> Iterator[
        list[socket.socket]]:
    """``count`` POSTs whose headers are sent and whose bodies are not: each
    waits in the app for its body, so it is in flight until the socket closes."""
    port = int(base.rsplit(":", 1)[1])
    with ExitStack() as stack:
        held = []
        for _ in range(count):
            sock = stack.enter_context(closing(socket.create_connection(("127.0.0.1", port))))
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
                         .encode())
            held.append(sock)
        yield held


def _wait_until_held(client: httpx.Client) -> None:
    """Until the held writes have taken their slots: a write that could not be
    stored anyway (422) is sent until it is refused instead."""
    deadline = time.monotonic() + 10
    while (r := client.post("/api/executions", json={"status": "nope"})).status_code != 503:
        error_of(r, 422, "invalid_body")
        assert time.monotonic() < deadline, "the held requests never took their slots"
        time.sleep(0.05)


def test_a_real_server_refuses_writes_over_the_cap_and_serves_the_rest(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_MAX_IN_FLIGHT", "2")
    with running_server(database_url) as base, \
            httpx.Client(base_url=base, timeout=10) as client:
        with _held_posts(base, 2) as held:
            _wait_until_held(client)
            r = client.post("/api/executions", json={"id": "refused"})
            error = error_of(r, 503, "overloaded")
            assert r.headers["retry-after"] == "1" and error["detail"]["kind"] == "write"
            # Nothing was written, and reads, the page and streams go on.
            error_of(client.get("/api/executions/refused"), 404, "execution_not_found")
            assert client.get("/api/executions").json()["executions"] == []
            assert "Runyard" in client.get("/").text
            with client.stream("GET", "/api/stream") as stream:
                assert stream.status_code == 200
            # A held request that completes frees its slot.
            held[0].sendall(b'{"id": "held-one"}  ')
            assert b"201 Created" in held[0].recv(65536)
            r = client.post("/api/executions", json={"id": "after"})
            assert r.status_code == 201
        # Clients that hang up mid-body free theirs too.
        deadline = time.monotonic() + 10
        while (r := client.post("/api/executions", json={"id": "last"})).status_code == 503:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.status_code == 201
        assert {e["id"] for e in client.get("/api/executions").json()["executions"]} == {
            "held-one", "after", "last"}
