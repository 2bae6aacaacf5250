"""Live fan-out benchmark (issue 4).

Starts one ``runyard serve`` process on a fresh SQLite file, connects CLIENTS
browsers' worth of SSE streams to ``/api/stream`` (spread over two client
processes so the clients do not starve on one core), and ingests RATE
executions per second with EVENTS log events each for SECONDS. Prints:

- latency from commit to receipt, p50 / p99 over every message at every client
  (commit time is the row's ``updated_at``, set inside the write transaction,
  so the figure slightly overstates the true latency);
- messages lost: executions a client never received (must be 0);
- the server's peak RSS.

Then, separately, how many idle SSE connections the server holds while its
RSS stays under 512 MB (target at least 5,000).

    .venv/bin/python bench/live.py [--clients 500] [--rate 200] [--seconds 60]

The clients are raw asyncio sockets with a minimal chunked-encoding reader: a
full HTTP client per message would cost more CPU than the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._server import cpu_s, free_port, raise_fd_limit, rss_kb, start_server

# Every client comes from 127.0.0.1: without these the per-client stream cap
# and request rate (issue 7) would refuse the benchmark itself.
SERVER_ENV = {"RUNYARD_RATE_LIMIT_PER_S": "0", "RUNYARD_MAX_STREAMS_PER_CLIENT": "0"}


async def open_stream(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    # A loopback Host: the server refuses other names (DNS rebinding, issue 7).
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    return reader, writer


def _ms(iso: bytes) -> float:
    return datetime.fromisoformat(iso.decode().replace("Z", "+00:00")).timestamp() * 1000


async def read_stream(reader: asyncio.StreamReader, seen: set[str] | None,
                      latencies: list[float] | None, counts: list[int], index: int) -> None:
    """Read chunked SSE. Timing clients (``seen`` given) record each execution id and
    its commit-to-receipt latency; the others only count messages. Parsing every
    message at every client would make the clients, not the server, the
    bottleneck on a 2-core machine and inflate the figure."""
    buffer = b""
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.strip() or b"0", 16)
        if size == 0:
            return
        chunk = await reader.readexactly(size + 2)
        if seen is None:
            counts[index] += chunk.count(b"\r\ndata: ")
            continue
        now = time.time() * 1000
        buffer += chunk[:-2]
        *messages, buffer = buffer.split(b"\r\n\r\n")
        for message in messages:
            at = message.find(b'data: {"id":"')
            if at < 0:
                continue
            start = at + 13
            seen.add(message[start:message.index(b'"', start)].decode())
            counts[index] += 1
            u = message.find(b'"updated_at":"')
            if u >= 0 and latencies is not None:
                latencies.append(now - _ms(message[u + 14:u + 38]))


def client_process(port: int, count: int, ready: mp.Event, stop: mp.Event,
                   out: mp.Queue) -> None:
    raise_fd_limit()

    async def main() -> None:
        # Every 10th client checks ids (no loss, no duplicate) and times messages.
        seen = [set() if i % 10 == 0 else None for i in range(count)]
        counts = [0] * count
        latencies: list[float] = []
        streams = []
        for i in range(count):
            streams.append(await open_stream(port, "/api/stream"))
            if i % 50 == 49:
                await asyncio.sleep(0)
        tasks = [asyncio.create_task(read_stream(r, seen[i], latencies, counts, i))
                 for i, (r, _) in enumerate(streams)]
        ready.set()
        cpu0, wall0 = time.process_time(), time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        # Is this client process itself a bottleneck (a core's worth of CPU)?
        busy = (time.process_time() - cpu0) / max(1e-9, time.monotonic() - wall0)
        for t in tasks:
            t.cancel()
        for _, w in streams:
            w.close()
        out.put(([None if s is None else sorted(s) for s in seen], counts, latencies, busy))

    asyncio.run(main())


def write_load(port: int, rate: int, events: int, seconds: float,
               tick: float = 0.1) -> list[str]:
    """Ingest ``rate`` executions/s in one request per ``tick``; returns their ids."""
    ids: list[str] = []
    per_tick = max(1, round(rate * tick))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            batch = []
            for _ in range(per_tick):
                execution_id = f"live-{n:07d}"
                n += 1
                ids.append(execution_id)
                batch.append({"id": execution_id, "name": "bench", "trigger_kind": "http",
                              "events": [{"message": f"event {k}"} for k in range(events)]})
            r = http.post("/api/ingest", json={"executions": batch})
            r.raise_for_status()
            n_ticks = n // per_tick
            sleep = start + n_ticks * tick - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
    return ids


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    rank = -(-len(ordered) * p // 100)
    return ordered[max(0, min(len(ordered), int(rank)) - 1)]


def fan_out(args: argparse.Namespace, db_dir: Path) -> None:
    port = free_port()
    server = start_server(db_dir / "live.db", port, SERVER_ENV)
    try:
        ctx = mp.get_context("fork")
        procs, outs, stop = [], [], ctx.Event()
        halves = [args.clients // 2, args.clients - args.clients // 2]
        for count in halves:
            ready, out = ctx.Event(), ctx.Queue()
            p = ctx.Process(target=client_process, args=(port, count, ready, stop, out))
            p.start()
            procs.append((p, ready))
            outs.append(out)
        for _, ready in procs:
            if not ready.wait(60):
                raise SystemExit("clients did not connect")
        print(f"{args.clients} clients connected; server RSS {rss_kb(server.pid) / 1024:.0f} MB")
        peak = [0]

        def watch() -> None:
            while server.poll() is None and not stop.is_set():
                peak[0] = max(peak[0], rss_kb(server.pid))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0, cpu0 = time.monotonic(), cpu_s(server.pid)
        ids = write_load(port, args.rate, args.events, args.seconds, args.tick)
        elapsed = time.monotonic() - t0
        time.sleep(3)  # let the last messages arrive
        cpu = cpu_s(server.pid) - cpu0
        peak[0] = max(peak[0], rss_kb(server.pid, "VmHWM"))
        stop.set()
        results = [out.get(timeout=60) for out in outs]
        for p, _ in procs:
            p.join(30)
        expected = set(ids)
        lost = received = 0
        latencies: list[float] = []
        duplicates = 0
        for seen_lists, counts, lat, _ in results:
            latencies.extend(lat)
            for seen, count in zip(seen_lists, counts, strict=True):
                received += count
                if seen is None:
                    lost += max(0, len(expected) - count)
                else:
                    lost += len(expected - set(seen))
                    duplicates += count - len(seen)
        print(f"\nwrote {len(ids)} executions ({len(ids) * (args.events + 1)} events) "
              f"in {elapsed:.1f} s = {len(ids) / elapsed:.0f} executions/s")
        print(f"messages received: {received} (expected {len(ids) * args.clients}); "
              f"latency timed on {len(latencies)} of them (every 10th client)")
        print("| figure | value | target |\n|---|---|---|")
        print(f"| latency p50 | {statistics.median(latencies):.1f} ms | < 20 ms |")
        print(f"| latency p99 | {percentile(latencies, 99):.1f} ms | < 150 ms |")
        print(f"| messages lost | {lost} | 0 |")
        print(f"| duplicates (timing clients) | {duplicates} | 0 |")
        print(f"| server peak RSS | {peak[0] / 1024:.0f} MB | |")
        print(f"| server CPU | {cpu:.1f} s over {elapsed:.0f} s "
              f"({cpu * 1e6 / max(1, received):.1f} µs per message delivered) | |")
        busy = ", ".join(f"{r[3]:.0%}" for r in results)
        print(f"| client processes' CPU (of one core each) | {busy} | |")
    finally:
        server.terminate()
        server.wait(15)


async def hold_idle(port: int, pid: int, target: int, limit_mb: int) -> tuple[int, float]:
    held = []
    rss = rss_kb(pid) / 1024
    while len(held) < target:
        batch = await asyncio.gather(*[open_stream(port, "/api/stream")
                                       for _ in range(min(250, target - len(held)))])
        held.extend(batch)
        await asyncio.sleep(0.5)
        rss = rss_kb(pid) / 1024
        if rss > limit_mb:
            break
    for _, w in held:
        w.close()
    return len(held), rss


def idle_capacity(args: argparse.Namespace, db_dir: Path) -> None:
    port = free_port()
    server = start_server(db_dir / "idle.db", port, SERVER_ENV)
    try:
        base = rss_kb(server.pid) / 1024
        held, rss = asyncio.run(hold_idle(port, server.pid, args.idle, 512))
        print(f"\nidle SSE connections held: {held} (target >= 5000); server RSS "
              f"{base:.0f} MB idle -> {rss:.0f} MB with them "
              f"({(rss - base) * 1024 / max(1, held):.1f} KB per connection)")
    finally:
        server.terminate()
        server.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=int, default=200, help="executions per second")
    parser.add_argument("--events", type=int, default=5, help="events per execution")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tick", type=float, default=0.1,
                        help="seconds between ingest requests (rate x tick runs each)")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections to try")
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp:
        fan_out(args, Path(tmp))
        if not args.skip_idle:
            idle_capacity(args, Path(tmp))


if __name__ == "__main__":
    main()
