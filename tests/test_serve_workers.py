"""``runyard serve --workers N``: several processes serve one database and act
as one server.

Which worker holds a connection is read from the kernel (the server side of
the TCP connection in /proc/net/tcp, then which process has that socket
open), so each check below is made across two workers for certain, not by
the luck of the kernel's accept.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from typing import Any

import pytest

from app.run_command import events
from app.settings import Settings
from tests.servers import serving_process

WORKERS = 2


def _socket_inode(server_port: int, client_port: int | None) -> int | None:
    """The inode of the server's listening socket (``client_port`` None) or of
    its end of the connection from ``client_port``, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if int(local.split(":")[1], 16) != server_port:
            continue
        if client_port is None and state == "0A":   # LISTEN
            return inode
        if client_port is not None and int(remote.split(":")[1], 16) == client_port:
            return inode
    return None


def _holders(inode: int) -> set[int]:
    """The processes that have the socket ``inode`` open."""
    target, out = f"socket:[{inode}]", set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                out.add(int(proc.name))
        except OSError:   # gone, or a kernel thread
            continue
    return out


def _request(conn: HTTPConnection, method: str, path: str,
             body: dict[str, Any] | None = None) -> tuple[int, Any]:
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@contextmanager
def _one_connection_per_worker(port: int, workers: set[int],
                               ) -> Iterator[dict[int, HTTPConnection]]:
    """Keep-alive connections until each worker holds one (a request answered
    on it first, so the worker has accepted it); closed afterwards."""
    held: dict[int, HTTPConnection] = {}
    try:
        for _ in range(300):
            conn = HTTPConnection("127.0.0.1", port, timeout=10)
            assert _request(conn, "GET", "/healthz")[0] == 200
            inode = _socket_inode(port, conn.sock.getsockname()[1])
            owner = _holders(inode) & workers if inode is not None else set()
            pid = owner.pop() if len(owner) == 1 else None
            if pid is None or pid in held:
                conn.close()
                assert pid is not None, f"one worker holds a connection, not {owner}"
            else:
                held[pid] = conn
            if len(held) == len(workers):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"300 connections all landed on workers {set(held)} "
                                 f"of {workers}")
        yield held
    finally:
        for conn in held.values():
            conn.close()


def _messages(response: HTTPResponse) -> Iterator[Any]:
    yield from events(iter(response.readline, b""))


@pytest.fixture
def two_workers(database_url: str) -> Iterator[tuple[Any, int, set[int]]]:
    """A ``serve --workers 2`` process, its port, and its workers' pids."""
    with serving_process(database_url, "--workers", str(WORKERS)) as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        inode = _socket_inode(port, None)
        assert inode is not None
        # The parent binds the socket and passes it to each worker it spawns.
        workers = _holders(inode) - {proc.pid}
        assert len(workers) == WORKERS
        yield proc, port, workers


def test_settings_survive_the_trip_to_a_worker_process() -> None:
    changed = Settings(database_url="postgresql://h/db", host="::1", port=9, demo=False,
                       allow_exec=True, workers=3, rate_limit_per_s=2.5, live_poll_s=0.1,
                       secret_key="s3cret")
    assert Settings.from_env(changed.to_env()) == changed
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_a_write_on_one_worker_reaches_a_stream_on_the_other(two_workers) -> None:
    _proc, port, workers = two_workers
    first, second = workers
    for streaming, writing in ((first, second), (second, first)):
        with _one_connection_per_worker(port, workers) as conns:
            _stream_sees_write(conns[streaming], conns[writing], f"written by {writing}")


def _stream_sees_write(streaming: HTTPConnection, writing: HTTPConnection, name: str) -> None:
    streaming.request("GET", "/api/stream")
    stream = streaming.getresponse()
    assert stream.status == 200
    status, body = _request(writing, "POST", "/api/executions", {"name": name})
    assert status == 201
    run_id = body["execution"]["id"]
    # The stream's worker learns of the other's commit from the database.
    seen = next(m for m in _messages(stream)
                if m.event == "execution" and json.loads(m.data)["id"] == run_id)
    assert json.loads(seen.data)["name"] == name


def test_a_cursor_from_one_worker_pages_on_the_other(two_workers) -> None:
    _proc, port, workers = two_workers
    with _one_connection_per_worker(port, workers) as conns:
        first, second = (conns[pid] for pid in workers)
        for name in ("older", "newer"):
            assert _request(first, "POST", "/api/executions", {"name": name})[0] == 201
        status, page = _request(first, "GET", "/api/executions?limit=1")
        assert status == 200
        assert [r["name"] for r in page["executions"]] == ["newer"]
        # Signed with the key in the database, which every worker reads.
        status, more = _request(second, "GET",
                                f"/api/executions?limit=1&cursor={page['next_cursor']}")
    assert status == 200, more
    assert [r["name"] for r in more["executions"]] == ["older"]


def test_sigterm_stops_every_worker(two_workers) -> None:
    proc, _port, workers = two_workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the server"
        time.sleep(0.05)
