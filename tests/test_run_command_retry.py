"""``runyard run`` sends a request refused for now (503, 429) again after its
``Retry-After``, and reports anything else, or a long wait, at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import run_command
from app.run_command import ClientError, submit


@contextmanager
def answering(*answers: tuple[int, str | None, dict[str, object]]) -> Iterator[
        tuple[str, list[bytes]]]:
    """A server that gives these (status, Retry-After, body) answers in order
    (the last one from then on); yields its URL and the bodies it was sent."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            status, retry, body = answers[min(len(bodies), len(answers)) - 1]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry is not None:
                self.send_header("Retry-After", retry)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


BUSY = {"error": {"code": "overloaded", "message": "the server is busy", "detail": {}}}
QUEUED = {"execution_id": "r1", "status": "queued"}


def test_busy_and_rate_limited_answers_are_retried_after_retry_after() -> None:
    with answering((503, "0", BUSY), (429, "0", BUSY), (202, None, QUEUED)) as (url, bodies):
        assert submit(url, {"argv": ["true"]}) == QUEUED
    # The same request each time.
    assert [json.loads(b) for b in bodies] == [{"argv": ["true"]}] * 3


def test_other_errors_and_long_waits_are_reported_at_once() -> None:
    conflict = {"error": {"code": "already_exists", "message": "it exists", "detail": {}}}
    with answering((409, None, conflict)) as (url, bodies):
        with pytest.raises(ClientError, match="it exists"):
            submit(url, {"argv": ["true"]})
        assert len(bodies) == 1
    full = {"error": {"code": "storage_full", "message": "the disk is full", "detail": {}}}
    with answering((503, "30", full)) as (url, bodies):
        started = time.monotonic()
        with pytest.raises(ClientError, match="the disk is full"):
            submit(url, {"argv": ["true"]})
        assert len(bodies) == 1 and time.monotonic() - started < 5


def test_retrying_stops_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_command, "RETRY_FOR_S", 0.5)
    with answering((503, "0.2", BUSY)) as (url, bodies), \
            pytest.raises(ClientError, match="the server is busy"):
        submit(url, {"argv": ["true"]})
    # Sent at 0, 0.2 and 0.4 s; a fourth would have passed 0.5 s of waiting.
    assert len(bodies) == 3
