"""Workers as separate processes, and ``runyard run`` against a real server.

A worker killed with SIGKILL mid-job loses its lease and its job is retried
or failed ``worker_lost``; two worker processes on one database never run a
job twice; ``runyard run --follow`` streams the output and exits with the
command's exit code. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.store import Store
from tests.jobs_support import (
    FAST_ENV,
    all_events,
    output,
    submit,
    wait_gone,
    wait_status,
    worker_running,
)
from tests.servers import running_server

_SCRIPT = Path(sys.executable).with_name("runyard")
RUNYARD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "app.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return {**env, **FAST_ENV, **extra}


@contextmanager
def worker_process(database_url: str, concurrency: int = 4) -> Iterator[subprocess.Popen[str]]:
    """``runyard worker`` in its own process; stopped with SIGTERM at the end."""
    proc = subprocess.Popen([*RUNYARD, "worker", "--concurrency", str(concurrency)],
                            env=_env(RUNYARD_DATABASE_URL=database_url), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def _lines(store: Store, run: str, n: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(lines := output(store, run)) < n:
        assert time.monotonic() < deadline, f"{run}: {lines}"
        time.sleep(0.05)
    return lines


def _start_log(store: Store, run: str) -> list[str]:
    # "attempt 1 of 2 on HOST/PID/TOKEN: pid N", written as each attempt starts.
    return [e["message"] for e in all_events(store, run, types=("log",))
            if e["message"].startswith("attempt ") and ": pid " in e["message"]]


@pytest.mark.parametrize("attempts", [2, 1])
def test_a_worker_killed_with_sigkill_loses_its_job_to_another(
        store: Store, database_url: str, tmp_path: Path, attempts: int) -> None:
    marker = tmp_path / "first-attempt"
    # The first attempt leaves a grandchild sleeping; a second attempt says so.
    script = (f"if [ -e {marker} ]; then echo second; "
              f"else touch {marker}; echo $$; sleep 1000 & echo $!; wait; fi")
    run = submit(store, script, max_attempts=attempts)
    with worker_process(database_url) as doomed:
        shell, sleeper = (int(x) for x in _lines(store, run, 2))
        assert f"/{doomed.pid}/" in _start_log(store, run)[0]
        # A second worker is already running, so the job moves only once the
        # dead worker's lease has expired (not through the dead-pid shortcut).
        with worker_running(store):
            time.sleep(0.3)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
            execution = wait_status(store, run, timeout=20)
    # Whatever the lost attempt left running on this host was killed.
    assert wait_gone(shell) and wait_gone(sleeper)
    if attempts == 2:
        assert execution["status"] == "completed"
        assert output(store, run)[-1] == "second"
        starts = _start_log(store, run)
        assert [s.split(" on ")[0] for s in starts] == ["attempt 1 of 2", "attempt 2 of 2"]
        notes = [e["message"] for e in all_events(store, run, types=("log",))]
        assert any("attempt 1 of 2 ended early" in n and "was lost" in n for n in notes)
    else:
        assert (execution["status"], execution["error"]) == ("failed", "worker_lost")


def test_two_worker_processes_never_run_the_same_job_twice(
        store: Store, database_url: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran.log"
    with worker_process(database_url) as first, worker_process(database_url) as second:
        time.sleep(1.5)   # both are up and polling before the jobs arrive
        runs = [submit(store, {"argv": ["sh", "-c", f"echo {i} >> {ran}; echo $PPID"]})
                for i in range(150)]
        for run in runs:
            assert wait_status(store, run, timeout=60)["status"] == "completed"
        assert first.poll() is None and second.poll() is None
    assert sorted(int(x) for x in ran.read_text().split()) == list(range(150))
    owners = set()
    for run in runs:
        starts = _start_log(store, run)
        assert len(starts) == 1 and starts[0].startswith("attempt 1 of 1 on ")
        owners.add(starts[0].split(" on ")[1].split("/")[1])
        claims = [e for e in all_events(store, run, types=("execution.status",))
                  if e["data"]["to"] == "running"]
        assert len(claims) == 1
    # Both took part: the claims really raced.
    assert owners == {str(first.pid), str(second.pid)}


def test_runyard_run_prints_the_run_and_follow_exits_with_its_code(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    with running_server(database_url, "--allow-exec") as base:
        port = base.rsplit(":", 1)[1]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*RUNYARD, "run", "--port", port, *args], env=_env(),
                                  capture_output=True, text=True, timeout=60, check=False)

        quick = run("--name", "hello", "--", "echo", "hi")
        assert quick.returncode == 0, quick.stderr
        run_id, url = quick.stdout.split()
        assert url == f"{base}/?run={run_id}"

        followed = run("--follow", "--label", "k=v", "--", "sh", "-c",
                       "echo out; echo err >&2; exit 3")
        assert followed.returncode == 3, followed.stderr
        assert followed.stdout == "out\n"
        assert "err\n" in followed.stderr and f"{base}/?run=" in followed.stderr

        many = run("-f", "--", sys.executable, "-c", "for i in range(20000): print(i)")
        assert many.returncode == 0, many.stderr
        assert many.stdout.split() == [str(i) for i in range(20000)]

        timed = run("-f", "--timeout", "0.3s", "--", "sleep", "10")
        assert timed.returncode == 124


def test_runyard_run_explains_a_server_that_does_not_run_commands(database_url: str) -> None:
    with running_server(database_url) as base:
        done = subprocess.run([*RUNYARD, "run", "--port", base.rsplit(":", 1)[1], "--", "true"],
                              env=_env(), capture_output=True, text=True, timeout=60,
                              check=False)
    assert done.returncode == 2
    assert "--allow-exec" in done.stderr and "RUNYARD_ALLOW_EXEC=1" in done.stderr


def _create_token(database_url: str, role: str, name: str) -> str:
    made = subprocess.run([*RUNYARD, "token", "create", "--role", role, "--name", name,
                           "--database-url", database_url], env=_env(), capture_output=True,
                          text=True, timeout=60, check=True)
    return made.stdout.strip().splitlines()[-1]


def test_runyard_run_and_the_recorder_send_their_token(database_url: str) -> None:
    import httpx

    from app import recorder

    ops = _create_token(database_url, "exec", "ops")
    exporter = _create_token(database_url, "write", "exporter")
    with running_server(database_url, "--allow-exec") as base:
        port = base.rsplit(":", 1)[1]

        def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*RUNYARD, "run", "--port", port, *args], env=_env(**env),
                                  capture_output=True, text=True, timeout=60, check=False)

        refused = run("--", "echo", "hi")
        assert refused.returncode == 2
        assert "token" in refused.stderr and "exec" in refused.stderr, refused.stderr
        followed = run("--token", ops, "-f", "--", "echo", "hi")
        assert followed.returncode == 0, followed.stderr
        assert followed.stdout == "hi\n"
        from_env = run("--", "true", RUNYARD_TOKEN=ops)
        assert from_env.returncode == 0, from_env.stderr

        recorder.configure(endpoint=base, token=exporter, delay_ms=50)
        try:
            with recorder.execution("recorded-with-a-token") as recorded:
                pass
            assert recorder.flush()
        finally:
            recorder.shutdown()
        seen = httpx.get(f"{base}/api/executions/{recorded.execution_id}",
                         headers={"Authorization": f"Bearer {ops}"})
        assert seen.status_code == 200, seen.text
        assert seen.json()["execution"]["name"] == "recorded-with-a-token"
