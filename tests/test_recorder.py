"""The recording helper against a real server, and with no server at all (issue 6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app import recorder
from tests.servers import free_port, running_server


@pytest.fixture
def clean_recorder() -> Iterator[None]:
    yield
    recorder.shutdown()


@recorder.tool(name="math.double")
def double(x: int) -> int:
    return 2 * x


@recorder.tool
async def fetch(page: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"page": page}


def _wait_for(base: str, execution_id: str, calls: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.get(f"{base}/api/executions/{execution_id}")
        if answer.status_code == 200 and answer.json()["execution"]["tool_call_count"] >= calls:
            return dict(answer.json()["execution"])
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.05)


def test_recorder_records_runs(sqlite_url: str, clean_recorder: None) -> None:
    database_url = sqlite_url  # the server's side is covered on both databases by test_otlp
    with running_server(database_url) as base:
        recorder.configure(endpoint=base, service_name="tests", delay_ms=50)
        with recorder.execution("nightly-sync", trigger="cli", team="infra") as run:
            with run.tool_call("github.issues.list", args={"repo": "x/y"}) as call:
                call.result = {"issues": 3}
                with run.tool_call("fs.read", args={"path": "/a"}) as inner:
                    inner.result = "text"
            assert double(21) == 42
            with pytest.raises(KeyError), run.tool_call("db.query", args={"q": 1}):
                raise KeyError("missing")

        async def in_async() -> str:
            with recorder.execution("async-run") as arun:
                await asyncio.gather(fetch(1), fetch(2))
                return arun.execution_id

        async_id = asyncio.run(in_async())
        assert recorder.flush()
        row = _wait_for(base, run.execution_id, 4)
        assert (row["name"], row["status"], row["trigger_kind"]) == ("nightly-sync",
                                                                     "completed", "cli")
        assert row["labels"] == {"team": "infra"}
        calls = {c["tool_path"]: c for c in httpx.get(
            f"{base}/api/executions/{run.execution_id}/tool-calls").json()["tool_calls"]}
        assert calls["github.issues.list"]["args"] == {"repo": "x/y"}
        assert calls["github.issues.list"]["result"] == {"issues": 3}
        assert calls["fs.read"]["parent_id"] == calls["github.issues.list"]["id"]
        assert calls["math.double"]["result"] == 42
        assert calls["db.query"]["status"] == "failed"
        assert calls["db.query"]["error"] == "KeyError: 'missing'"
        async_calls = httpx.get(f"{base}/api/executions/{async_id}/tool-calls").json()
        assert sorted(c["args"]["page"] for c in async_calls["tool_calls"]) == [1, 2]
        assert recorder.dropped_spans() == 0


def test_recorder_with_server_down(clean_recorder: None) -> None:
    recorder.configure(endpoint=f"http://127.0.0.1:{free_port()}", timeout=0.5, delay_ms=10)
    with recorder.execution("offline") as run, run.tool_call("a.b", args={}) as call:
        call.result = 1
    recorder.flush(5)
    assert recorder.dropped_spans() == 2
    recorder.shutdown()  # and the host program carries on


def test_demo_sends_otlp_runs(sqlite_url: str) -> None:
    database_url = sqlite_url  # one database is enough for the demo
    from app.cli import main

    with running_server(database_url) as base:
        assert main(["demo", "--otlp", base]) == 0
        runs = httpx.get(f"{base}/api/executions", params={"trigger": "otlp-demo"}).json()
        assert runs["meta"]["total"] == 5


def test_three_lines_flush_at_exit(sqlite_url: str, tmp_path: Any) -> None:
    """A program that never calls flush or shutdown still delivers its run."""
    database_url = sqlite_url  # one database is enough
    import subprocess
    import sys

    script = tmp_path / "host.py"
    script.write_text(
        "import sys\nfrom app import recorder\n"
        "recorder.configure(endpoint=sys.argv[1])\n"
        "with recorder.execution('three-lines', trigger='cli') as run:\n"
        "    with run.tool_call('a.b', args={'x': 1}) as call:\n"
        "        call.result = 2\n")
    with running_server(database_url) as base:
        done = subprocess.run([sys.executable, str(script), base], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        runs = httpx.get(f"{base}/api/executions", params={"trigger": "cli"}).json()
        assert [r["name"] for r in runs["executions"]] == ["three-lines"]
        assert runs["executions"][0]["tool_call_count"] == 1
