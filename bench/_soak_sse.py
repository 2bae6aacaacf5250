"""The stream side of ``bench/soak.py``: SSE clients that stay connected and
read everything, in one process of raw asyncio sockets (a full HTTP client
per message would cost more CPU than the server under test; see
``bench/live.py``).

- List clients (``/api/stream``, some filtered, some ``format=html``) count
  messages. A few "checkers" also note every run id they see, so the report
  can say which acknowledged runs a stream never showed.
- Run clients follow one running run at a time
  (``/api/executions/{id}/stream``) until its ``end``, then compare the event
  ids they got with the run's events read from the API, and take the next
  run. Which runs are running, they learn from a checker's messages.

A client that is disconnected reconnects (with ``after=`` its last id) and
the reconnect is counted: there should be none.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import uvloop

from app.store.inputs import TERMINAL
from bench._http import Pool
from bench._server import raise_fd_limit

# (kind, path (a run stream: its query), share of the clients, how many are checkers)
PLAN: tuple[tuple[str, str, float, int], ...] = (
    ("list", "/api/stream", 0.50, 3),
    ("list status=failed", "/api/stream?status=failed", 0.10, 1),
    ("list trigger=cron", "/api/stream?trigger=cron", 0.10, 0),
    ("html (page live mode)", "/api/stream?from=-24h&format=html", 0.20, 0),
    ("html status=failed", "/api/stream?status=failed&from=-24h&format=html", 0.05, 0),
    ("run", "", 0.03, 0),
    ("run html", "?format=html", 0.02, 0),
)


@dataclass
class ClientStats:
    """One client's figures (``seen``: run ids, for checkers only)."""

    kind: str
    messages: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    seen: set[str] | None = None
    runs_followed: int = 0
    run_events_missing: int = 0
    run_events_missing_after_end: int = 0


def plan(clients: int) -> list[tuple[str, str, bool]]:
    """(kind, path or run query, checker?) for each of ``clients`` clients."""
    out: list[tuple[str, str, bool]] = []
    for kind, path, share, checkers in PLAN:
        n = max(1, round(clients * share))
        out += [(kind, path, i < checkers) for i in range(n)]
    return out[:clients]


async def open_sse(host: str, port: int, path: str, headers: dict[str, str],
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and send the GET; raises unless the answer is 200."""
    reader, writer = await asyncio.open_connection(host, port, limit=2**22)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Accept: text/event-stream\r\n{extra}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return reader, writer


async def frames(reader: asyncio.StreamReader) -> AsyncIterator[list[bytes]]:
    """Yield lists of complete SSE frames (bytes, without the blank line) as
    chunks arrive; ends when the server ends the response."""
    buffer = b""
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.strip() or b"0", 16)
        if size == 0:
            return
        buffer += (await reader.readexactly(size + 2))[:-2]
        *complete, buffer = buffer.split(b"\r\n\r\n")
        if complete:
            yield complete


def _field(frame: bytes, name: bytes) -> bytes | None:
    for line in frame.split(b"\r\n"):
        if line.startswith(name):
            return line[len(name):]
    return None


class Streams:
    """Every client of the process, and what they share (the running runs)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.running: deque[str] = deque(maxlen=200)
        self.connected = 0
        self.api = Pool(host, port, 4, headers)

    async def list_client(self, path: str, stats: ClientStats) -> None:
        """Read a list stream for ever, reconnecting from the last id if dropped."""
        last: bytes | None = None
        first = True
        sep = "&" if "?" in path else "?"
        while True:
            url = path if last is None else f"{path}{sep}after={last.decode()}"
            try:
                reader, writer = await open_sse(self.host, self.port, url, self.headers)
            except (OSError, asyncio.IncompleteReadError) as exc:
                stats.errors.append(f"connect: {exc}")
                await asyncio.sleep(1)
                continue
            if first:
                self.connected += 1
                first = False
            try:
                async for batch in frames(reader):
                    for frame in batch:
                        if frame.startswith(b":"):
                            continue    # a ping
                        stats.messages += 1
                        if frame.startswith(b"id: "):
                            last = frame[4:frame.index(b"\r\n")]
                        if stats.seen is not None:
                            self._note(frame, stats.seen)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                stats.errors.append(f"read: {exc!r}")
            finally:
                writer.close()
            stats.reconnects += 1

    def _note(self, frame: bytes, seen: set[str]) -> None:
        data = _field(frame, b"data: ")
        if data is None:
            return
        row = json.loads(data)
        if row["id"] not in seen:
            seen.add(row["id"])
            if row["status"] == "running":
                self.running.append(row["id"])

    async def run_client(self, query: str, stats: ClientStats) -> None:
        """Follow running runs one after another, checking each one's events."""
        self.connected += 1
        rng = random.Random(id(stats))
        while True:
            if not self.running:
                await asyncio.sleep(0.2)
                continue
            run = self.running.pop() if rng.random() < 0.5 else self.running.popleft()
            got: set[int] = set()
            ended = False
            try:
                reader, writer = await open_sse(
                    self.host, self.port, f"/api/executions/{run}/stream{query}", self.headers)
            except (OSError, asyncio.IncompleteReadError) as exc:
                stats.errors.append(f"connect {run}: {exc}")
                continue
            try:
                async for batch in frames(reader):
                    for frame in batch:
                        if frame.startswith(b":"):
                            continue
                        stats.messages += 1
                        if frame.startswith(b"id: "):
                            got.add(int(frame[4:frame.index(b"\r\n")]))
                        elif _field(frame, b"event: ") == b"end":
                            ended = True
                    if ended:
                        break
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                stats.errors.append(f"read {run}: {exc!r}")
            finally:
                writer.close()
            if not ended:
                stats.reconnects += 1
                continue
            stats.runs_followed += 1
            try:
                response = await self.api.request(
                    "GET", f"/api/executions/{run}/events?limit=1000")
                events = json.loads(response.body)["events"]
            except Exception as exc:     # the check failed, not the stream: say so
                stats.errors.append(f"events of {run}: {exc!r}")
                continue
            missing = {int(e["id"]) for e in events} - got
            stats.run_events_missing += len(missing)
            # Told apart: events after the terminal status (the same write's
            # progress and field changes), which the live path has been seen to cut.
            end_id = min((int(e["id"]) for e in events if e["type"] == "execution.status"
                          and (e.get("data") or {}).get("to") in TERMINAL), default=None)
            if end_id is not None:
                stats.run_events_missing_after_end += sum(i > end_id for i in missing)


def sse_process(host: str, port: int, clients: int, headers: dict[str, str],
                ready: Any, stop: Any, out: Any) -> None:
    """Process entry: connect ``clients`` streams, set ``ready``, read until
    ``stop``, then put every client's figures (as dicts) and the process's CPU
    seconds on ``out``."""
    raise_fd_limit()

    async def main() -> None:
        streams = Streams(host, port, headers)
        stats: list[ClientStats] = []
        tasks = []
        for i, (kind, path, checker) in enumerate(plan(clients)):
            s = ClientStats(kind, seen=set() if checker else None)
            stats.append(s)
            coro = (streams.run_client(path, s) if kind.startswith("run")
                    else streams.list_client(path, s))
            tasks.append(asyncio.create_task(coro))
            if i % 20 == 19:
                await asyncio.sleep(0.05)   # do not open 200 at the same instant
        deadline = time.monotonic() + 60
        while streams.connected < len(stats) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ready.set()
        cpu0 = time.process_time()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        cpu = time.process_time() - cpu0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out.put(([asdict(s) for s in stats], streams.connected, cpu))

    uvloop.run(main())
