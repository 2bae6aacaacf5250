"""The Markdown report of ``bench/soak.py``: what was sent, what came back, and
what the server's memory and CPU did, each figure next to its target."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench._machine import steal_pct
from bench._openloop import pct

INGEST_TARGET, PAGE_TARGET, RSS_TARGET_PCT = 300, 20, 10.0


def _routes(facts: dict[str, Any], seconds: float) -> list[str]:
    rows = ["| route | sent | /s | errors (timeouts, 503s) | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|"]
    for load in facts["loads"]:
        for name, s in sorted(load["routes"].items()):
            lat = sorted(s["latencies"]) or [0.0]
            rows.append(f"| {name} | {s['sent']:,} | {s['sent'] / seconds:.1f} "
                        f"| {s['errors']} ({s['timeouts']}, {s.get('refused', 0)}) "
                        f"| {pct(lat, 50):.1f} | {pct(lat, 95):.1f} | {pct(lat, 99):.1f} "
                        f"| {lat[-1]:.0f} |")
    return rows


def _totals(facts: dict[str, Any], seconds: float) -> tuple[list[str], int]:
    lines, errors = [], 0
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for load in facts["loads"]:
        by_kind.setdefault(load["kind"], []).append(load)
    for kind, target in (("ingest", INGEST_TARGET), ("pages", PAGE_TARGET)):
        loads = by_kind.get(kind, [])
        routes = [s for load in loads for n, s in load["routes"].items()
                  if not n.startswith("GET /api/executions (")]
        sent = sum(s["sent"] for s in routes)
        err = sum(s["errors"] for s in routes)
        ok = sent - err
        unfinished = sum(load["loop"]["unfinished"] for load in loads)
        warm = sum(s["warmup_sent"] for s in routes), sum(s["warmup_errors"] for s in routes)
        errors += err + unfinished + warm[1]
        lines.append(f"- {kind}: sent {sent:,} = **{sent / seconds:.1f}/s** (target {target}/s), "
                     f"answered 2xx {ok / seconds:.1f}/s; errors {err}, unfinished at the end "
                     f"{unfinished}; warm-up {warm[0]:,} sent, {warm[1]} errors")
        when: dict[int, int] = {}
        for s in routes:
            for second, n in s["error_seconds"].items():
                when[int(second)] = when.get(int(second), 0) + n
        if when:
            lines.append("  - errors by the second they were due (from the end of warm-up): "
                         + ", ".join(f"{t:+d}s {n}" for t, n in sorted(when.items())[:40])
                         + (" …" if len(when) > 40 else ""))
        for load in loads:
            loop = load["loop"]
            lines.append(
                f"  - client process ({load['rate']:g}/s): CPU {load['cpu_s']:.0f} s over "
                f"{load['wall_s']:.0f} s = {100 * load['cpu_s'] / load['wall_s']:.0f}% of a "
                f"core; sent late by p50 {loop['lag_p50_ms']:.1f} / p99 "
                f"{loop['lag_p99_ms']:.1f} / max {loop['lag_max_ms']:.0f} ms; at most "
                f"{loop['max_in_flight']} in flight")
    return lines, errors


def _streams(facts: dict[str, Any]) -> tuple[list[str], int]:
    clients = facts["clients"]
    if not clients:
        return ["- no SSE clients in this run"], 0
    created = [i for load in facts["loads"] for i in load.get("created", [])]
    ended: dict[str, str] = {}
    for load in facts["loads"]:
        ended.update(load.get("ended", {}))
    failed = {i for i, status in ended.items() if status == "failed"}
    rows = ["| stream kind | clients | messages | per client min / median / max "
            "| reconnects | errors |", "|---|---|---|---|---|---|"]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for c in clients:
        kinds.setdefault(c["kind"], []).append(c)
    bad = 0
    for kind, group in kinds.items():
        counts = sorted(c["messages"] for c in group)
        reconnects = sum(c["reconnects"] for c in group)
        errors = sum(len(c["errors"]) for c in group)
        if not kind.startswith("run"):
            bad += reconnects + errors
        rows.append(f"| {kind} | {len(group)} | {sum(counts):,} | {counts[0]:,} / "
                    f"{int(statistics.median(counts)):,} / {counts[-1]:,} | {reconnects} "
                    f"| {errors} |")
    notes = [f"- connected: {facts['connected']} of {len(clients)}; SSE client process CPU "
             f"{facts['sse_cpu']:.0f} s ({100 * facts['sse_cpu'] / facts['sse_wall']:.0f}% of "
             "a core)",
             f"- runs acknowledged while the streams were open: {len(created):,} (each must "
             "show at least once on every unfiltered list stream; one message per change, "
             "changes within one burst coalesced into one)"]
    for c in clients:
        if c["seen"] is None:
            continue
        want = set(created) if "status" not in c["kind"] else failed
        lost = len(want - set(c["seen"]))
        bad += lost
        notes.append(f"- checker on `{c['kind']}`: {len(c['seen']):,} distinct runs seen, "
                     f"{len(want):,} expected, **{lost} missing**")
    runs = [c for c in clients if c["kind"].startswith("run")]
    followed = sum(c["runs_followed"] for c in runs)
    missing = sum(c["run_events_missing"] for c in runs)
    after_end = sum(c["run_events_missing_after_end"] for c in runs)
    bad += missing
    notes.append(f"- run streams: {followed} runs followed to their `end`, "
                 f"{sum(c['messages'] for c in runs):,} events received, **{missing} missing** "
                 f"({after_end} of them written after the terminal status event, in the "
                 "same write; compared with each run's events read from the API afterwards)")
    for c in clients:
        for e in c["errors"][:2]:
            notes.append(f"  - {c['kind']}: {e}")
    return [*rows, "", *notes], bad


def _cpu_each(first: dict[str, Any], last: dict[str, Any], window: float) -> list[str]:
    """With workers, how the server's CPU split between its processes (an even
    split means the kernel spread the connections, and so the work, evenly)."""
    each = [(pid, last["cpu_each"][pid] - first["cpu_each"][pid])
            for pid in last["cpu_each"] if pid in first["cpu_each"]]
    if len(each) < 2:
        return []
    parts = ", ".join(f"{pid}: {100 * cpu / window:.0f}%" for pid, cpu in each)
    return [f"  - by process (% of one core): {parts}"]


def _memory(facts: dict[str, Any]) -> tuple[list[str], float]:
    samples = facts["samples"]
    first = next(s for s in samples if s["t"] >= 0)
    last = samples[-1]
    mid = next(s for s in samples if s["t"] >= last["t"] / 2)
    growth = 100 * (last["VmRSS"] - first["VmRSS"]) / first["VmRSS"]
    second_half = 100 * (last["VmRSS"] - mid["VmRSS"]) / mid["VmRSS"]
    anon = 100 * (last["RssAnon"] - first["RssAnon"]) / first["RssAnon"]
    cpu = last["cpu"] - first["cpu"]
    window = last["t"] - first["t"]
    loads = [s["load"] for s in samples]
    mb = 1024
    lines = [
        f"- server RSS: {first['VmRSS'] / mb:.0f} MB at the start of the window (after "
        f"warm-up), {last['VmRSS'] / mb:.0f} MB at its end: **{growth:+.1f}%** (target "
        f"≤ {RSS_TARGET_PCT:.0f}%); {second_half:+.1f}% over the second half of the window; "
        f"peak {last['VmHWM'] / mb:.0f} MB" + (
            f" (each figure summed over the server's {last['processes']} processes, the "
            f"parent and its workers; the peak is the sum of each one's)"
            if last.get("processes", 1) > 1 else ""),
        f"  - of which anonymous (heap) {first['RssAnon'] / mb:.0f} → "
        f"{last['RssAnon'] / mb:.0f} MB ({anon:+.1f}%), file-backed (code, SQLite's mmap "
        f"of the database) {first['RssFile'] / mb:.0f} → {last['RssFile'] / mb:.0f} MB",
        f"- server CPU: {cpu:.0f} s over {window:.0f} s = {100 * cpu / window:.0f}% of one "
        f"core; CPU time stolen by the host over the window: "
        f"{steal_pct(first['ticks'], last['ticks']):.0f}% of the machine's",
        *_cpu_each(first, last, window),
        f"- load average (1 min) during the run: min {min(loads):.2f}, mean "
        f"{statistics.mean(loads):.2f}, max {max(loads):.2f} (before: "
        f"{facts['load_before'][0]:.2f})",
        f"- database at the end: {facts['db_runs']:,} runs, {facts['db_mb']:.0f} MB with WAL; "
        f"integrity_check: {facts['integrity']}; server alive at the end: "
        f"{facts['server_alive']}",
    ]
    rss_trace = [f"{s['t']:.0f}s {s['VmRSS'] / mb:.0f}" for s in samples[::60]]
    lines.append(f"- RSS (MB) every minute: {', '.join(rss_trace)}")
    if facts["log_errors"]:
        lines.append(f"- server log ({facts['log_path']}): **{facts['log_errors']} ERROR "
                     "lines**; the first:")
        lines += ["", "```", *facts["log_excerpt"], "```"]
    else:
        lines.append("- server log: no ERROR lines")
    return lines, growth


def report(args: argparse.Namespace, facts: dict[str, Any]) -> str:
    """The whole report, Markdown."""
    seconds = facts["measured_s"]
    auth = ("Bearer tokens (write for ingest, read for pages and streams)" if args.token
            else "none (no token exists: loopback is trusted)")
    facts["sse_wall"] = seconds + facts["warmup_s"] + 4
    head = [
        f"## Soak: {args.minutes:g} min measured (+{args.warmup:.0f} s warm-up)",
        "",
        f"- machine: {facts['machine']} before the run; other work on the machine at the "
        "same time: see the load average below",
        f"- load offered: {args.ingest_rate:g} ingest requests/s, {args.page_rate:g} page "
        f"loads/s, {args.clients} SSE clients; {args.seed_runs:,} runs seeded first; auth: "
        f"{auth}",
        "- server settings: " + ", ".join(f"`{k}={v}`" for k, v in facts["server_env"].items())
        + " (the rate limiter and the stream cap would otherwise refuse one address this load)",
        "",
    ]
    totals, errors = _totals(facts, seconds)
    streams, stream_bad = _streams(facts)
    memory, growth = _memory(facts)
    verdict = [
        "",
        "| target | result |", "|---|---|",
        f"| errors 0 | {errors} {'✓' if errors == 0 else '✗'} |",
        f"| SSE: nothing missing, no drops | {stream_bad} {'✓' if stream_bad == 0 else '✗'} |",
        f"| RSS growth ≤ {RSS_TARGET_PCT:.0f}% | {growth:+.1f}% "
        f"{'✓' if growth <= RSS_TARGET_PCT else '✗'} |",
    ]
    return "\n".join([*head, *_routes(facts, seconds), "", *totals, "", *streams, "",
                      *memory, *verdict])
