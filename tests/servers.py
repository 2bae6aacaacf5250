"""A real ``runyard serve`` process on a free port, and a small SSE reader for tests.

Streams are tested against a real server: httpx's ASGI transport buffers a
streaming body, so it cannot show what a browser would see.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx

from app.run_command import SSE, events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(database_url: str, *extra: str) -> Iterator[str]:
    """Start ``runyard serve`` on ``database_url``; yields its base URL."""
    with serving_process(database_url, *extra) as (_proc, base):
        yield base


@contextmanager
def serving_process(database_url: str, *extra: str,
                    ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Like :func:`running_server`, and yields the process too."""
    port = free_port()
    env = {**os.environ, "RUNYARD_DATABASE_URL": database_url}
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--no-demo", "--port", str(port),
             *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(proc, base, log)
            yield proc, base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_up(proc: subprocess.Popen[str], base: str, log: IO[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start in 30 s")
        time.sleep(0.1)


def sse_messages(client: httpx.Client, url: str, headers: dict[str, str] | None = None,
                 ) -> Iterator[SSE]:
    """Yield messages of an event stream until the server ends it (comments skipped),
    parsed by the same reader ``runyard run --follow`` uses."""
    with client.stream("GET", url, headers=headers or {}) as response:
        response.raise_for_status()
        yield from events(line.encode() for line in response.iter_lines())
