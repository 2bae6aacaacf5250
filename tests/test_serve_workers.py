"""``runyard serve --workers N``: several processes serve one database and act
as one server.

Which worker holds a connection is read from the kernel (the server side of
the TCP connection in /proc/net/tcp, then which process has that socket
open), so each check below is made across two workers for certain, not by
the luck of the kernel's accept. Each worker listens on a socket of its own
(``SO_REUSEPORT``, app/serving.py), so the same is read for listening.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from typing import Any

import pytest

from app.run_command import events
from app.settings import Settings
from tests.servers import serving_process

WORKERS = 2


def _tcp_sockets(server_port: int) -> list[tuple[str, int, int]]:
    """``(state, client port, inode)`` of the server's end of every TCP socket on
    ``server_port``, from /proc/net/tcp (state ``0A`` is LISTEN, ``01`` open)."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if int(local.split(":")[1], 16) == server_port:
            out.append((state, int(remote.split(":")[1], 16), inode))
    return out


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the connection from ``client_port``."""
    return next((inode for state, remote, inode in _tcp_sockets(server_port)
                 if state != "0A" and remote == client_port), None)


def _sockets_of(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open."""
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):   # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    return out


def _holders(inode: int) -> set[int]:
    """The processes that have the socket ``inode`` open."""
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with suppress(OSError):   # gone, or a kernel thread
                if inode in _sockets_of(int(proc.name)):
                    out.add(int(proc.name))
    return out


def _listening_workers(port: int, parent: int, count: int = WORKERS,
                       timeout_s: float = 30) -> set[int]:
    """The processes listening on ``port``, once ``count`` sockets listen there:
    each worker on a socket of its own, and the parent on none."""
    deadline = time.monotonic() + timeout_s
    while True:
        holders = [_holders(inode) for state, _, inode in _tcp_sockets(port) if state == "0A"]
        if len(holders) == count and all(holders):
            break
        assert time.monotonic() < deadline, f"{len(holders)} sockets listen, not {count}"
        time.sleep(0.05)
    assert all(len(h) == 1 for h in holders), f"a socket shared: {holders}"
    workers = set().union(*holders)
    assert len(workers) == count and parent not in workers, (workers, parent)
    return workers


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
        yield proc, port, _listening_workers(port, proc.pid)


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


def _owners(port: int, conns: list[socket.socket], workers: set[int]) -> Counter[int]:
    """How many of ``conns`` each worker holds."""
    held = {pid: _sockets_of(pid) for pid in workers}
    owners: Counter[int] = Counter()
    for conn in conns:
        inode = _socket_inode(port, conn.getsockname()[1])
        owner = [pid for pid, inodes in held.items() if inode in inodes]
        assert len(owner) == 1, f"connection {inode} held by {owner}"
        owners[owner[0]] += 1
    return owners


def _healthz_on(port: int, count: int) -> list[socket.socket]:
    """``count`` connections opened together, each answered once (so the
    worker that holds it has accepted it)."""
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for conn in conns:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for conn in conns:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200 "), "not answered"
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns


def test_connections_opened_together_spread_over_the_workers(two_workers) -> None:
    # With one shared socket, the worker that woke first accepted nearly all
    # of a burst (199 of 200 once), and streams stay where they land. A
    # fair hash gives each worker at least 15 of 60 but 1 time in 10,000.
    _proc, port, workers = two_workers
    conns = _healthz_on(port, 60)
    try:
        owners = _owners(port, conns, workers)
    finally:
        for conn in conns:
            conn.close()
    assert set(owners) == workers and min(owners.values()) >= 15, owners


def test_a_worker_that_dies_takes_its_socket_and_is_replaced(two_workers) -> None:
    proc, port, workers = two_workers
    dead = min(workers)
    listening = {inode for state, _, inode in _tcp_sockets(port) if state == "0A"}
    its_socket = (listening & _sockets_of(dead)).pop()
    os.kill(dead, signal.SIGKILL)
    # Its socket closes with its last thread: the dead worker was its only
    # holder (the parent keeps no copy), so no connection waits on a socket
    # nobody accepts from.
    deadline = time.monotonic() + 10
    while any(inode == its_socket for _, _, inode in _tcp_sockets(port)):
        assert time.monotonic() < deadline, "the killed worker's socket still listens"
        time.sleep(0.01)
    conns = _healthz_on(port, 20)
    for conn in conns:
        conn.close()
    # uvicorn's supervisor starts a replacement, on a new socket of its own.
    now = _listening_workers(port, proc.pid)
    assert dead not in now and len(now - workers) == 1
    conns = _healthz_on(port, 40)
    try:
        assert set(_owners(port, conns, now)) == now
    finally:
        for conn in conns:
            conn.close()


def test_a_second_server_on_the_same_port_is_refused(two_workers, database_url: str) -> None:
    # SO_REUSEPORT would let a second server of the same user share the port
    # and take half its connections; the plain bind first refuses it.
    _proc, port, workers = two_workers
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--no-demo", "--port", str(port),
         "--workers", "2"], env={**os.environ, "RUNYARD_DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert _listening_workers(port, _proc.pid) == workers
