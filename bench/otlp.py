"""OTLP ingest benchmark (issue 6): spans per second, end to end, on SQLite.

Builds TRACES traces of SPANS spans each with the real OpenTelemetry SDK (not
timed), then times sending them with the real OTLP/HTTP protobuf exporter in
batches of 512 spans (the ``BatchSpanProcessor`` default), from SENDERS
threads, to a ``runyard serve`` on a fresh SQLite file, until the last trace
of every sender is queryable through the API.

    .venv/bin/python bench/otlp.py [--traces 20000] [--spans 6] [--senders 4]

With ``--phoenix-venv DIR`` (a virtual environment where ``arize-phoenix`` is
installed: ``python -m venv DIR && DIR/bin/pip install arize-phoenix``), the
same spans go to a ``phoenix serve`` on its default SQLite storage, timed until
Phoenix's GraphQL API counts them all. Without it, or when that environment
has no ``phoenix``, that part is skipped and says so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.db.migrate import upgrade
from tests.servers import free_port, running_server

BATCH = 512


def build(traces: int, spans: int) -> tuple[list[ReadableSpan], list[str]]:
    """``traces`` traces (a root and ``spans - 1`` tool calls), in end order."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    ids = []
    for i in range(traces):
        with tracer.start_as_current_span("bench-run", attributes={
                "runyard.trigger": "bench", "n": i}) as root:
            ids.append(format(root.get_span_context().trace_id, "032x"))
            for j in range(spans - 1):
                with tracer.start_as_current_span("step", attributes={
                        "gen_ai.tool.name": f"tool.t{j}",
                        "gen_ai.tool.call.arguments": f'{{"i": {i}, "j": {j}}}',
                        "gen_ai.tool.call.result": '{"ok": true}'}):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans()), ids


def send(endpoint: str, spans: list[ReadableSpan], senders: int) -> None:
    """Export ``spans`` in 512-span batches from ``senders`` threads."""
    chunks = [spans[i:i + BATCH] for i in range(0, len(spans), BATCH)]
    failures: list[int] = []

    def worker(mine: list[list[ReadableSpan]]) -> None:
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=60)
        for chunk in mine:
            if exporter.export(chunk) is not SpanExportResult.SUCCESS:
                failures.append(len(chunk))
        exporter.shutdown()

    threads = [threading.Thread(target=worker, args=(chunks[k::senders],))
               for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{sum(failures)} spans were not accepted")


def children_cpu_s() -> float:
    """CPU seconds (user + system) so far of this process's child processes
    that are still running (the server; Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_queryable(base: str, traces: int) -> None:
    """Until the list counts every run (a 200 from the server means committed, so
    this is one query, but it proves the runs are there)."""
    with httpx.Client(base_url=base, timeout=60) as client:
        while client.get("/api/executions", params={"limit": 1}).json()[
                "meta"]["total"] < traces:
            time.sleep(0.01)


@contextmanager
def phoenix_server(venv: Path) -> Iterator[str]:
    """``phoenix serve`` from ``venv`` on free ports and a fresh working directory."""
    port, grpc = free_port(), free_port()
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc),
               "PHOENIX_WORKING_DIR": work}
        proc = subprocess.Popen([str(venv / "bin" / "phoenix"), "serve"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("phoenix did not start")
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def phoenix_spans(base: str) -> int:
    query = "{ projects { edges { node { recordCount } } } }"
    answer = httpx.post(f"{base}/graphql", json={"query": query}, timeout=30).json()
    return sum(e["node"]["recordCount"] for e in answer["data"]["projects"]["edges"])


def bench_phoenix(venv: Path, spans: list[ReadableSpan], senders: int) -> None:
    if not (venv / "bin" / "phoenix").exists():
        print(f"phoenix: skipped (no phoenix in {venv})")
        return
    with phoenix_server(venv) as base:
        start = time.perf_counter()
        send(f"{base}/v1/traces", spans, senders)
        accepted = time.perf_counter() - start
        while phoenix_spans(base) < len(spans):
            if time.perf_counter() - start > 600:
                raise SystemExit("phoenix did not store every span in 600 s")
            time.sleep(0.2)
        took = time.perf_counter() - start
    print(f"phoenix: {len(spans):,} spans in {took:.2f} s = {len(spans) / took:,.0f} spans/s "
          f"(all accepted after {accepted:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--spans", type=int, default=6)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--phoenix-venv", type=Path, metavar="DIR",
                        help="a virtual environment with arize-phoenix, to compare")
    args = parser.parse_args()
    # A benchmark server: no per-client request rate or stream limits.
    os.environ.update(RUNYARD_RATE_LIMIT_PER_S="0", RUNYARD_MAX_STREAMS_PER_CLIENT="0")
    t0 = time.perf_counter()
    spans, ids = build(args.traces, args.spans)
    print(f"built {len(spans):,} spans in {time.perf_counter() - t0:.1f} s (not timed)")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        with running_server(url) as base:
            load = os.getloadavg()[0]
            server_cpu, client_cpu = children_cpu_s(), time.process_time()
            start = time.perf_counter()
            send(f"{base}/v1/traces", spans, args.senders)
            wait_queryable(base, args.traces)
            took = time.perf_counter() - start
            server_cpu = children_cpu_s() - server_cpu
            client_cpu = time.process_time() - client_cpu
            calls = httpx.get(f"{base}/api/executions/otel-{ids[-1]}/tool-calls").json()
            assert len(calls["tool_calls"]) == args.spans - 1, calls
    n = len(spans)
    print(f"runyard: {n:,} spans in {took:.2f} s = {n / took:,.0f} spans/s (target 10,000); "
          f"CPU per span: server {server_cpu / n * 1e6:.0f} µs, client (exporter) "
          f"{client_cpu / n * 1e6:.0f} µs; load average {load:.2f} → {os.getloadavg()[0]:.2f}")
    if args.phoenix_venv is not None:
        bench_phoenix(args.phoenix_venv, spans, args.senders)
    else:
        print("phoenix: skipped (no --phoenix-venv)")


if __name__ == "__main__":
    main()
