"""Server CPU per live write request, by route (issue 7's soak target).

What it measures
    The soak's ingest mix (``bench/_soak_ingest.py``, reused as it is: the same
    bodies, the same interleaving of about 60 runs in flight, 5 % small
    ``/api/ingest`` batches; made in advance, so building them costs nothing
    here) sent one request at a time to a fresh SQLite database while
    ``--streams`` SSE clients watch the list (the soak has 200), and the
    server CPU each request costs: user + system time of every thread
    of the server process from the request's start to the next one's, so the
    live hub's read and fan-out, the checkpoint thread and whatever else the
    commit sets off count too.

    ``--mode asgi`` (the default) runs the real app in this process (lifespan,
    hub, every middleware: body limit, auth, limits, routing, JSON, pydantic,
    store, commit, notifier) and calls it as an ASGI app; CPU is
    ``time.process_time``. Everything but the HTTP server is measured, and
    ``--profile`` shows where it goes.
    ``--mode server`` starts ``runyard serve`` (uvicorn) and sends real HTTP
    over one keep-alive connection; CPU is the sum over the server's threads
    of ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds, not clock ticks).
    This is what the soak's server spends, HTTP parsing included.

    ``--rate 0`` (the default) sends each request as soon as the last is
    answered: the steadiest figure (caches stay warm), but the hub then reads
    the feed once per three or four writes. ``--rate 300`` spaces them as the
    soak does, so the hub reads after nearly every write, and waking from idle
    costs what it costs on a server that is not saturated.

    The first ``--warmup`` requests are sent but not counted. Every request
    must answer 2xx (the script fails otherwise): the figures are only worth
    comparing while behaviour is unchanged. On a shared machine, compare runs
    made one after the other, and repeat them.

Usage (from the repository root)::

    .venv/bin/python bench/write_path.py                      # in process, 3,000 requests
    .venv/bin/python bench/write_path.py --rate 300           # spaced as in the soak
    .venv/bin/python bench/write_path.py --mode server        # through uvicorn
    .venv/bin/python bench/write_path.py --token --streams 0  # Bearer tokens, nobody watching
    .venv/bin/python bench/write_path.py --profile out.prof   # cProfile of every thread
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.db.migrate import upgrade
from app.factory import create_app
from app.process import tune_gc
from app.settings import Settings
from app.store import Store
from bench._http import Pool, Response
from bench._machine import describe
from bench._server import free_port, start_server, stop_server
from bench._soak_ingest import IngestMix

# As bench/soak.py runs its server: all load comes from one address.
SERVER_ENV = {"RUNYARD_RATE_LIMIT_PER_S": "0", "RUNYARD_MAX_STREAMS_PER_CLIENT": "0"}
SETTINGS: dict[str, Any] = {"rate_limit_per_s": 0, "max_streams_per_client": 0}
# What most of the soak's 200 streams are: the list's default view.
STREAM_PATH = "/api/stream"
JSON = {"Content-Type": "application/json"}
ROUTE_ORDER = ("POST /api/executions", "POST …/tool-calls", "POST …/events",
               "PATCH …/tool-calls/{id}", "PATCH /api/executions/{id}", "POST /api/ingest")


class AsgiPool:
    """Stands in for ``bench._http.Pool``: calls the app in this process and
    notes the process CPU each request costs (``last_cpu_s``)."""

    def __init__(self, app: Any, headers: dict[str, str], interval_s: float) -> None:
        self.app, self.interval_s = app, interval_s
        self.fixed = [(b"host", b"127.0.0.1:8000"),
                      *((k.lower().encode(), v.encode()) for k, v in headers.items())]
        self.last_cpu_s = 0.0

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        raw = body or b""
        scope = self._scope(method, path, [
            *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
            (b"content-length", str(len(raw)).encode())])
        status, parts = 0, []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        c0, t0 = time.process_time(), time.monotonic()
        await self.app(scope, self._receive_once(raw), send)
        await asyncio.sleep(max(0.0, t0 + self.interval_s - time.monotonic()))
        self.last_cpu_s = time.process_time() - c0
        return Response(status, b"", b"".join(parts))

    def _scope(self, method: str, path: str, headers: list[tuple[bytes, bytes]],
               ) -> dict[str, Any]:
        path, _, query = path.partition("?")
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "root_path": "", "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000), "state": {}, "headers": [*self.fixed, *headers],
        }

    @staticmethod
    def _receive_once(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()   # the client never hangs up
            raise AssertionError

        return receive

    async def stream(self, path: str, received: list[int]) -> None:
        """Read an SSE stream until the app ends it, counting its bytes."""

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                received[0] += len(message.get("body", b""))

        await self.app(self._scope("GET", path, []), self._receive_once(b""), send)


class ServerPool(Pool):
    """``bench._http.Pool`` that notes the server's CPU per request."""

    def __init__(self, port: int, pid: int, headers: dict[str, str], interval_s: float) -> None:
        super().__init__("127.0.0.1", port, 1, headers)
        self.pid, self.interval_s = pid, interval_s
        self.last_cpu_s = 0.0

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        c0, t0 = server_cpu_s(self.pid), time.monotonic()
        response = await super().request(method, path, body, headers)
        await asyncio.sleep(max(0.0, t0 + self.interval_s - time.monotonic()))
        self.last_cpu_s = server_cpu_s(self.pid) - c0
        return response


async def server_stream(port: int, path: str, headers: dict[str, str],
                        received: list[int]) -> None:
    """Read an SSE stream of ``runyard serve`` until it ends, counting its bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
    try:
        while chunk := await reader.read(1 << 16):
            received[0] += len(chunk)
    finally:
        writer.close()


def server_cpu_s(pid: int) -> float:
    """CPU seconds run by the threads ``pid`` has now (schedstat: nanoseconds)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread ended
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total / 1e9


# (route, method, path, body) of one request of the mix.
Request = tuple[str, str, str, bytes]
Cpu = dict[str, list[float]]


class _Recording:
    """Stands in for the soak's pool and recorder: notes what the mix sends and
    answers every request 200, as a server that accepts all of them would."""

    def __init__(self) -> None:
        self.sent: list[Request] = []
        self._last: tuple[str, str, bytes] = ("", "", b"")

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        self._last = (method, path, body or b"")
        return Response(200, b"", b"{}")

    async def send(self, route: str, due: float,
                   call: Callable[[], Awaitable[Response]]) -> Response:
        response = await call()
        self.sent.append((route, *self._last))
        return response


def soak_requests(count: int, seed: int) -> list[Request]:
    """The first ``count`` requests of the soak's ingest mix, made in advance so
    that building them costs nothing in the measured process's windows or
    profiles. Every request must then answer 2xx for the order to hold."""
    recording = _Recording()
    mix = IngestMix(recording, recording, "wp", seed)  # type: ignore[arg-type]

    async def record() -> None:
        while len(recording.sent) < count:
            await mix.fire(0.0)

    asyncio.run(record())
    return recording.sent[:count]


async def drive(pool: AsgiPool | ServerPool, requests: list[Request], warmup: int,
                on_counted: Callable[[], None] = lambda: None) -> Cpu:
    """Send ``requests`` one at a time; the CPU of each after the first
    ``warmup``, by route. Fails on any answer but a 2xx."""
    cpu: Cpu = {}
    for i, (route, method, path, body) in enumerate(requests):
        if i == warmup:
            on_counted()
        response = await pool.request(method, path, body, JSON)
        if not 200 <= response.status < 300:
            raise SystemExit(f"{route} answered {response.status}: {response.body[:200]!r}")
        if i >= warmup:
            cpu.setdefault(route, []).append(pool.last_cpu_s)
    return cpu


async def run_asgi(args: argparse.Namespace, db: Path, requests: list[Request]) -> Cpu:
    url = f"sqlite:///{db}"
    tune_gc()   # as `runyard serve` does
    upgrade(url)
    settings = Settings(database_url=url, demo=False, **SETTINGS)
    write_h, read_h = tokens(args, settings)
    profiles = ThreadProfiles() if args.profile else None
    app = create_app(settings)
    pool = AsgiPool(app, write_h, interval(args))
    received = [0]
    async with app.router.lifespan_context(app):
        streams = [asyncio.create_task(AsgiPool(app, read_h, 0).stream(STREAM_PATH, received))
                   for _ in range(args.streams)]
        await asyncio.sleep(0.1)
        cpu = await drive(pool, requests, args.warmup,
                          profiles.start if profiles else lambda: None)
        await asyncio.sleep(0.1)
    # The lifespan's end closed the streams.
    await asyncio.gather(*streams)
    check_streams(args.streams, received[0])
    if profiles is not None:
        stats = profiles.stats()
        stats.dump_stats(args.profile)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
    return cpu


async def run_server(args: argparse.Namespace, db: Path, requests: list[Request]) -> Cpu:
    url = f"sqlite:///{db}"
    upgrade(url)
    # Tokens before the server starts: it caches "no token exists" for a while.
    write_h, read_h = tokens(args, Settings(database_url=url))
    port = free_port()
    received = [0]
    with open(db.with_suffix(".log"), "wb") as log:
        server = start_server(db, port, SERVER_ENV, log)
        try:
            streams = [asyncio.create_task(server_stream(port, STREAM_PATH, read_h, received))
                       for _ in range(args.streams)]
            await asyncio.sleep(0.1)
            pool = ServerPool(port, server.pid, write_h, interval(args))
            cpu = await drive(pool, requests, args.warmup)
            await asyncio.sleep(0.1)
            pool.close()
        finally:
            stop_server(server)
    await asyncio.gather(*streams, return_exceptions=True)
    check_streams(args.streams, received[0])
    return cpu


def tokens(args: argparse.Namespace, settings: Settings,
           ) -> tuple[dict[str, str], dict[str, str]]:
    """Headers for the writes and for the streams: none, or with ``--token`` a
    write and a read token created straight in the database."""
    if not args.token:
        return {}, {}
    from app.db.engine import open_database

    store = Store(open_database(settings.database_url))
    try:
        return ({"Authorization": f"Bearer {store.create_token('bench-write', ['write'])[1]}"},
                {"Authorization": f"Bearer {store.create_token('bench-read', ['read'])[1]}"})
    finally:
        store.db.dispose()


def interval(args: argparse.Namespace) -> float:
    """Seconds from one request's start to the next's (0: back to back)."""
    return 1.0 / args.rate if args.rate > 0 else 0.0


def check_streams(streams: int, received: int) -> None:
    if streams and received < 1000 * streams:
        raise SystemExit(f"the streams received only {received} bytes: not measuring fan-out")


class ThreadProfiles:
    """cProfile of every thread from ``start()`` on: the store runs in worker
    threads, and a ``cProfile.Profile`` sees only the thread that enabled it.
    Covers threads started after this is made (build it before the app).
    Times are each thread's CPU time, not wall time: a thread waiting for the
    GIL or for a lock is not spending. The few frames of this script's own
    loop show up too."""

    def __init__(self) -> None:
        self.on = False
        self.profiles: dict[int, cProfile.Profile] = {}
        threading.setprofile(self._hook)

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        if self.on:
            # Enabling replaces this hook for the thread with the profiler.
            profile = cProfile.Profile(time.thread_time)
            self.profiles[threading.get_ident()] = profile
            profile.enable()

    def start(self) -> None:
        self.on = True
        self._hook(None, "call", None)

    def stats(self) -> pstats.Stats:
        """Every thread's calls completed so far. Another thread's profile is
        read, not disabled: disabling it from here would close its open calls
        with this thread's clock."""
        threading.setprofile(None)   # type: ignore[arg-type]
        here = threading.get_ident()
        snapshots = []
        for ident, profile in self.profiles.items():
            if ident == here:
                profile.disable()
            profile.snapshot_stats()
            snapshots.append(_Snapshot(profile.stats))  # type: ignore[attr-defined]
        return pstats.Stats(*snapshots)  # type: ignore[arg-type]


class _Snapshot:
    """What ``pstats.Stats`` reads from a profile, without disabling it."""

    def __init__(self, stats: dict[Any, Any]) -> None:
        self.stats = stats

    def create_stats(self) -> None:
        pass


def report(cpu: Cpu, mode: str) -> None:
    print(f"server CPU per request ({mode}; ms; {sum(map(len, cpu.values()))} counted)")
    print(f"{'route':<28}{'n':>6}{'mean':>8}{'p50':>8}{'p90':>8}")
    every: list[float] = []
    for route in sorted(cpu, key=lambda r: ROUTE_ORDER.index(r)
                        if r in ROUTE_ORDER else len(ROUTE_ORDER)):
        values = sorted(v * 1000 for v in cpu[route])
        every.extend(values)
        print(f"{route:<28}{len(values):>6}{statistics.fmean(values):>8.3f}"
              f"{statistics.median(values):>8.3f}{_p90(values):>8.3f}")
    if every:
        every.sort()
        print(f"{'all (the soak mix)':<28}{len(every):>6}{statistics.fmean(every):>8.3f}"
              f"{statistics.median(every):>8.3f}{_p90(every):>8.3f}")


def _p90(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("asgi", "server"), default="asgi")
    parser.add_argument("--requests", type=int, default=3000, help="requests counted")
    parser.add_argument("--warmup", type=int, default=300, help="requests sent first, not counted")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second, one at a time (0: each as soon as the "
                             "last is answered)")
    parser.add_argument("--streams", type=int, default=1,
                        help=f"SSE clients on {STREAM_PATH} while writing (the soak has 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--token", action="store_true",
                        help="send Bearer tokens (write for the requests, read for the streams)")
    parser.add_argument("--profile", metavar="FILE",
                        help="(asgi) cProfile every thread over the counted requests; "
                             "write the stats to FILE and print the top")
    parser.add_argument("--database", type=Path,
                        help="SQLite file (must not exist; default: a temporary one)")
    args = parser.parse_args()
    print(f"machine: {describe()}", flush=True)
    requests = soak_requests(args.warmup + args.requests, args.seed)
    with tempfile.TemporaryDirectory(prefix="write-path-") as tmp:
        db = args.database or Path(tmp) / "bench.db"
        if db.exists():
            raise SystemExit(f"{db} exists: give a new file")
        run = run_asgi if args.mode == "asgi" else run_server
        cpu = asyncio.run(run(args, db, requests))
    report(cpu, args.mode)


if __name__ == "__main__":
    main()
