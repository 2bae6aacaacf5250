"""Demo data: a realistic week of runs, written through the bulk ingest path."""

from __future__ import annotations

import random
from typing import Any

from app.store import Store
from app.store.inputs import parse_ingest
from app.times import now_ms

TRIGGERS = ("cli", "http", "mcp", "schedule")
TOOLS = (
    "github.issues.list", "github.issues.create", "github.pulls.get", "github.repos.search",
    "slack.chat.post", "slack.users.lookup", "slack.channels.history",
    "fs.read", "fs.write", "fs.glob", "http.get", "http.post",
    "db.query", "search.web", "llm.complete",
)
NAMES = (
    "nightly-sync", "triage-issues", "summarize-channel", "deploy-preview", "backfill-users",
    "weekly-report", "index-docs", "answer-question", "rotate-keys", "import-csv",
)
ERRORS = (
    "RateLimitError: GitHub API rate limit exceeded (retry after 42s)",
    "TimeoutError: http.get https://api.example.com/v2/items took longer than 30s",
    "PermissionError: fs.write /srv/reports/weekly.md: read-only file system",
    "KeyError: 'channel_id'",
    "ValueError: could not parse CSV row 1187: expected 7 fields, saw 9",
)
WARNINGS = ("retrying after 429", "response was truncated to 1 MB", "slow query: 2.4s",
            "deprecated tool version", "cache miss for key users:all")
# Weights: most runs complete, a realistic share fail, a few of everything else.
STATUS_WEIGHTS = {
    "completed": 70, "failed": 14, "running": 3, "waiting_for_interaction": 2, "queued": 2,
    "pending": 1, "cancelled": 4, "timed_out": 4,
}
DAY_MS = 86_400_000


def _execution(rng: random.Random, index: int, created: int) -> dict[str, Any]:
    status = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()))[0]
    name = rng.choice(NAMES)
    trigger = rng.choice(TRIGGERS)
    started = created + rng.randint(0, 2_000)
    duration = int(rng.lognormvariate(8.5, 1.2))  # median ~5 s, a long tail
    completed = started + duration
    terminal = status in ("completed", "failed", "cancelled", "timed_out")
    calls, events = [], []
    t = started
    for seq in range(rng.randint(0, 12)):
        path = rng.choice(TOOLS)
        call_ms = int(rng.lognormvariate(6, 1))
        end = t + call_ms
        failed = status == "failed" and seq > 0 and rng.random() < 0.2
        open_call = not terminal and end > completed
        calls.append({
            "id": f"demo-{index}-tc{seq}", "tool_path": path,
            "args": {"query": f"{name} #{index}", "page": seq + 1},
            "status": "running" if open_call else ("failed" if failed else "completed"),
            "result": None if failed or open_call else {"items": rng.randint(0, 50)},
            "error": rng.choice(ERRORS) if failed else None,
            "started_at": t, "completed_at": None if open_call else end,
        })
        t = end + rng.randint(5, 200)
    for seq in range(rng.randint(1, 8)):
        roll = rng.random()
        level = "error" if roll < 0.06 else "warn" if roll < 0.18 else "info"
        message = (rng.choice(WARNINGS) if level == "warn" else
                   rng.choice(ERRORS) if level == "error" else f"step {seq + 1} of {name} done")
        events.append({"type": "log", "level": level, "message": message,
                       "ts": started + seq * max(1, duration // 8)})
    interactions = []
    if status == "waiting_for_interaction" or rng.random() < 0.06:
        pending = status == "waiting_for_interaction"
        interactions.append({
            "id": f"demo-{index}-q", "kind": rng.choice(("approval", "elicitation")),
            "message": "Deploy the preview to staging?" if rng.random() < 0.5
            else "Which channel should the summary go to?",
            "request": {"options": ["yes", "no"]},
            "status": "pending" if pending else "resolved",
            "action": None if pending else rng.choice(("accept", "decline")),
            "created_at": started + 100, "resolved_at": None if pending else started + 5_000,
        })
    code = (f"runyard run -- ./scripts/{name}.sh --batch {index % 97}" if trigger == "cli"
            else f"agent.run({name!r}, user='ops@example.com')")
    return {
        "id": f"demo-{index:06d}", "name": name, "status": status, "trigger_kind": trigger,
        "trigger_meta": {"host": f"worker-{index % 5}", "user": "ops"},
        "code": code,
        "result": {"ok": True, "items": len(calls)} if status == "completed" else None,
        "error": rng.choice(ERRORS) if status in ("failed", "timed_out") else None,
        "exit_code": (0 if status == "completed" else 1 if status == "failed" else None)
        if trigger == "cli" else None,
        "progress_pct": 100.0 if status == "completed" else (
            round(rng.uniform(5, 95), 1) if status == "running" else None),
        "progress_stage": "done" if status == "completed" else (
            "fetching" if status == "running" else None),
        "labels": {"env": rng.choice(("prod", "staging")), "team": rng.choice(("ops", "data"))},
        "created_at": created,
        "started_at": None if status in ("pending", "queued") else started,
        "completed_at": completed if terminal else None,
        "tool_calls": calls, "interactions": interactions, "events": events,
    }


def seed(store: Store, executions: int = 3000, days: int = 7, seed_value: int = 7) -> int:
    """Write ``executions`` demo runs spread over the last ``days`` days; returns how many."""
    rng = random.Random(seed_value)
    now = now_ms()
    batch: list[dict[str, Any]] = []
    written = 0
    for index in range(executions):
        # More runs recently, as a live system has; the newest are still going.
        age = int(days * DAY_MS * (rng.random() ** 1.6))
        run = _execution(rng, index, now - age - 60_000)
        if age < 600_000 and run["status"] in ("completed", "failed"):
            run.update(status="running", completed_at=None, error=None, result=None,
                       exit_code=None, progress_pct=round(rng.uniform(5, 95), 1),
                       progress_stage="fetching")
        batch.append(run)
        if len(batch) == 500 or index == executions - 1:
            written += store.ingest(parse_ingest({"executions": batch}))[
                "executions"]
            batch = []
    return written


# Real commands for `make run` (exec allowed): short, harmless, and between
# them they show output, progress, a failure, a timeout and an approval.
DEMO_JOBS: tuple[dict[str, Any], ...] = (
    {"name": "system info", "command": {"argv": ["uname", "-a"]}},
    {"name": "build (demo)", "labels": {"env": "dev"}, "command": {"shell": (
        'for i in 1 2 3 4 5 6 7 8 9 10; do '
        'echo "::progress pct=$((i*10)) stage=step-$i::compiling module $i"; '
        'echo "compiling module $i of 10"; sleep 1; done; echo "build ok"')}},
    {"name": "config check (fails)", "command": {"shell": (
        'echo "reading config"; echo "error: missing key region" >&2; exit 2')}},
    {"name": "slow sync (times out)", "timeout_s": 5, "command": {"shell": (
        'i=0; while true; do i=$((i+1)); echo "synced batch $i"; sleep 1; done')}},
    {"name": "deploy preview (needs approval)", "requires_approval": True,
     "command": {"shell": 'echo "deploying preview"; sleep 2; echo "deployed"'}},
)


def demo_jobs(store: Store) -> list[str]:
    """Queue the demo commands; their execution ids."""
    from app.store.inputs import JobSubmit
    from app.store.jobs import Limits

    ids = []
    for job in DEMO_JOBS:
        answer, _ = store.submit_job(
            JobSubmit.model_validate({**job, "trigger_kind": "cli"}), Limits())
        ids.append(answer["execution_id"])
    return ids


def send_otlp_demo(endpoint: str, runs: int = 5, seed_value: int = 7) -> tuple[int, int]:
    """Record a few runs into a running server through the real OTLP exporter
    (``app.recorder``), so OTLP-born runs show beside the others (issue 6).
    Returns ``(runs recorded, spans dropped)``: dropped when nothing answers."""
    from app import recorder

    rng = random.Random(seed_value)
    recorder.configure(endpoint=endpoint, service_name="runyard-demo", timeout=5.0)
    try:
        for index in range(runs):
            name = rng.choice(NAMES)
            try:
                with recorder.execution(f"otlp {name}", trigger="otlp-demo",
                                        source="opentelemetry") as run:
                    for step in range(rng.randint(2, 6)):
                        path = rng.choice(TOOLS)
                        with run.tool_call(path, args={"run": index, "step": step}) as call:
                            if rng.random() < 0.15:
                                raise RuntimeError(rng.choice(ERRORS))
                            call.result = {"items": rng.randint(0, 50)}
            except RuntimeError:
                pass  # recorded as a failed run; the demo goes on
        recorder.flush(10)
        return runs, recorder.dropped_spans()
    finally:
        recorder.shutdown()
