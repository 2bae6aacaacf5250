"""The ingest side of ``bench/soak.py``: what an agent recording its runs sends.

Most requests follow runs through their life on the live endpoints, each run
being 11 requests in order: create, then three times (start a tool call,
append 5-15 log lines, finish the call), then the final status. A request is
only sent for a run whose previous one was acknowledged (the next step of a
run whose create is still in flight would be a 404), but the *rate* stays
open-loop: when no run is ready for its next step, a new run starts. The rest
(``batch_share``) are small ``/api/ingest`` batches of finished runs, as an
importer or a batching exporter sends them.

Bodies are the size real ones are: a few lines of code, labels, tool
arguments and results of a few hundred bytes, log lines of 60-160 characters.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from app.times import format_ms, now_ms
from bench._http import Pool
from bench._openloop import Recorder

TRIGGERS = ("cli", "cron", "http", "mcp")
TOOLS = ("github.issues.list", "github.pulls.get", "slack.chat.post", "db.query",
         "http.get", "fs.read", "search.web")
WORDS = ("fetch", "parse", "retry", "cache", "index", "commit", "branch", "deploy", "report",
         "token", "queue", "worker", "upstream", "payload", "schema", "latency")
STEPS = 11  # create, 3 x (tool start, events, tool finish), final status
JSON = {"Content-Type": "application/json"}


def _text(rng: random.Random, low: int, high: int) -> str:
    words, size = [], 0
    target = rng.randint(low, high)
    while size < target:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    return " ".join(words)[:high]


def _code(rng: random.Random) -> str:
    lines = [f"result = tools.{rng.choice(TOOLS)}(query={_text(rng, 10, 30)!r})"
             for _ in range(rng.randint(3, 8))]
    return "\n".join(["import tools", *lines, "print(result)"])


def _events(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        roll = rng.random()
        level = "error" if roll < 0.01 else "warn" if roll < 0.06 else "info"
        out.append({"type": rng.choice(("log", "stdout")), "level": level,
                    "message": _text(rng, 60, 160)})
    return out


@dataclass
class Run:
    """A run being recorded: its id, the next step, and how it will end."""

    id: str
    step: int
    status: str


class IngestMix:
    """Picks and sends each due ingest request; keeps the ids acknowledged."""

    def __init__(self, pool: Pool, recorder: Recorder, prefix: str, seed: int,
                 active_target: int = 60, batch_share: float = 0.05,
                 batch_size: int = 4) -> None:
        self.pool, self.recorder, self.prefix = pool, recorder, prefix
        self.rng = random.Random(seed)
        self.active_target, self.batch_share, self.batch_size = (
            active_target, batch_share, batch_size)
        self.ready: list[Run] = []
        self.active = 0
        self.n = 0
        # Acknowledged: every run created, and how the finished ones ended.
        self.created: list[str] = []
        self.ended: dict[str, str] = {}

    async def fire(self, due: float) -> None:
        """Send whichever request is next in the mix."""
        if self.rng.random() < self.batch_share:
            await self._batch(due)
            return
        if self.ready and self.active >= self.active_target:
            # A random ready run, so runs interleave as concurrent agents' do.
            i = self.rng.randrange(len(self.ready))
            self.ready[i], self.ready[-1] = self.ready[-1], self.ready[i]
            run = self.ready.pop()
        else:
            self.n += 1
            self.active += 1
            status = "failed" if self.rng.random() < 0.1 else "completed"
            run = Run(f"{self.prefix}-{self.n:07d}", 0, status)
        route, method, path, body = self._request(run)
        ok = await self.recorder.send(route, due, lambda: self.pool.request(
            method, path, json.dumps(body).encode(), JSON)) is not None
        if not ok:
            self.active -= 1     # a run that lost a step is abandoned
            return
        if run.step == 0:
            self.created.append(run.id)
        run.step += 1
        if run.step == STEPS:
            self.active -= 1
            self.ended[run.id] = run.status
        else:
            self.ready.append(run)

    def _request(self, run: Run) -> tuple[str, str, str, dict[str, Any]]:
        rng, base = self.rng, f"/api/executions/{run.id}"
        if run.step == 0:
            return "POST /api/executions", "POST", "/api/executions", {
                "id": run.id, "name": f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{self.n}",
                "trigger_kind": rng.choice(TRIGGERS), "code": _code(rng),
                "trigger_meta": {"user": f"agent-{rng.randrange(20)}", "host": "soak"},
                "labels": {"env": rng.choice(("prod", "staging")),
                           "team": rng.choice(("core", "data", "infra"))}}
        if run.step == STEPS - 1:
            failed = run.status == "failed"
            return "PATCH /api/executions/{id}", "PATCH", base, {
                "status": run.status, "exit_code": 1 if failed else 0, "progress_pct": 100,
                **({"error": "RuntimeError: " + _text(rng, 30, 80)} if failed else
                   {"result": {"summary": _text(rng, 40, 120), "tokens": rng.randrange(9999)}})}
        call, phase = divmod(run.step - 1, 3)
        call_id = f"{run.id}-t{call}"
        if phase == 0:
            return "POST …/tool-calls", "POST", base + "/tool-calls", {
                "id": call_id, "tool_path": rng.choice(TOOLS),
                "args": {"repo": "acme/api", "query": _text(rng, 20, 60), "page": call}}
        if phase == 1:
            return "POST …/events", "POST", base + "/events", {
                "events": _events(rng, rng.randint(5, 15))}
        if rng.random() < 0.05:
            return "PATCH …/tool-calls/{id}", "PATCH", f"{base}/tool-calls/{call_id}", {
                "status": "failed", "error": "TimeoutError: upstream took more than 30 s"}
        return "PATCH …/tool-calls/{id}", "PATCH", f"{base}/tool-calls/{call_id}", {
            "status": "completed",
            "result": {"items": [{"id": k, "title": _text(rng, 20, 50)} for k in range(5)]}}

    async def _batch(self, due: float) -> None:
        runs = []
        for _ in range(self.batch_size):
            self.n += 1
            runs.append(finished_run(self.rng, f"{self.prefix}-b{self.n:07d}", ago_ms=60_000))
        ok = await self.recorder.send("POST /api/ingest", due, lambda: self.pool.request(
            "POST", "/api/ingest", json.dumps({"executions": runs}).encode(), JSON))
        if ok is not None:
            for run in runs:
                self.created.append(run["id"])
                self.ended[run["id"]] = run["status"]


def finished_run(rng: random.Random, run_id: str, ago_ms: int) -> dict[str, Any]:
    """A finished run for ``/api/ingest``, started up to ``ago_ms`` ago, with two
    tool calls (ids ``<run>-t0``, ``<run>-t1``) and six events."""
    start = now_ms() - rng.randrange(1000, ago_ms)
    failed = rng.random() < 0.1
    calls = [{"id": f"{run_id}-t{k}", "tool_path": rng.choice(TOOLS), "status": "completed",
              "args": {"query": _text(rng, 20, 60)}, "result": {"ok": True, "n": k},
              "started_at": format_ms(start + 100 + k * 400),
              "completed_at": format_ms(start + 400 + k * 400)} for k in range(2)]
    return {"id": run_id, "name": f"{rng.choice(WORDS)} batch",
            "trigger_kind": rng.choice(TRIGGERS), "status": "failed" if failed else "completed",
            "code": _code(rng),
            "error": "ValueError: " + _text(rng, 20, 60) if failed else None,
            "created_at": format_ms(start), "started_at": format_ms(start),
            "completed_at": format_ms(start + rng.randrange(900, 5000)),
            "tool_calls": calls, "events": _events(rng, 6)}
