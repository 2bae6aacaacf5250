"""How a job ends: exit codes, timeouts, cancels (the whole process group), spawn errors.

Real commands through a real worker, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from app.store import Store
from tests.jobs_support import (
    all_events,
    gone,
    output,
    submit,
    wait_gone,
    wait_status,
    worker_running,
)

PY = sys.executable
# Prints the pid of a grandchild that sleeps 1000 s, then waits for it.
GRANDCHILD = "sleep 1000 & echo $!; wait"


def _first_line(store: Store, run: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not (lines := output(store, run)):
        assert time.monotonic() < deadline, "no output"
        time.sleep(0.02)
    return lines[0]


def test_exit_0_completes_and_a_non_zero_exit_fails_with_the_stderr_tail(store: Store) -> None:
    with worker_running(store):
        ok = submit(store, {"argv": ["true"]})
        bad = submit(store, "echo working; for i in $(seq 1 30); do echo problem $i >&2; done; "
                            "exit 7")
        quiet = submit(store, {"argv": ["false"]})
        assert wait_status(store, ok)["status"] == "completed"
        failed = wait_status(store, bad)
        silent = wait_status(store, quiet)
    assert (failed["status"], failed["exit_code"]) == ("failed", 7)
    # The last 20 stderr lines are the error.
    assert failed["error"] == "\n".join(f"problem {i}" for i in range(11, 31))
    assert (silent["status"], silent["exit_code"], silent["error"]) == (
        "failed", 1, "exited with code 1")
    assert wait_status(store, ok)["exit_code"] == 0


def test_death_by_signal_is_128_plus_the_signal(store: Store) -> None:
    with worker_running(store):
        run = submit(store, "kill -SEGV $$")
        execution = wait_status(store, run)
    assert (execution["status"], execution["exit_code"]) == ("failed", 139)
    assert execution["error"].startswith("killed by signal SIGSEGV")


def test_a_timeout_kills_the_group_and_the_run_timed_out(store: Store) -> None:
    with worker_running(store):
        run = submit(store, GRANDCHILD, timeout_s=0.5)
        grandchild = int(_first_line(store, run))
        execution = wait_status(store, run)
    assert (execution["status"], execution["error"]) == ("timed_out", "timed out after 0.5s")
    assert execution["duration_ms"] < 5000
    assert wait_gone(grandchild)


def test_cancel_kills_the_grandchild_and_the_run_is_cancelled(store: Store) -> None:
    with worker_running(store):
        run = submit(store, GRANDCHILD)
        grandchild = int(_first_line(store, run))
        assert not gone(grandchild)
        answer, owner = store.cancel_job(run)
        # Running: the answer is the current status; the worker (found through
        # its lease renewal, as a worker in another process would) does the rest.
        assert answer == {"execution_id": run, "status": "running"}
        assert owner is not None
        execution = wait_status(store, run, timeout=10)
    assert (execution["status"], execution["error"]) == ("cancelled", "cancelled")
    assert wait_gone(grandchild)
    messages = [e["message"] for e in all_events(store, run, types=("log",))]
    assert "cancel requested" in messages


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(store: Store) -> None:
    with worker_running(store, worker_kill_grace_s=0.3):
        run = submit(store, "trap '' TERM; echo $$; while true; do sleep 0.05; done")
        pid = int(_first_line(store, run))
        store.cancel_job(run)
        assert wait_status(store, run)["status"] == "cancelled"
    assert wait_gone(pid)


def test_what_a_command_leaves_running_is_killed_when_it_exits(store: Store) -> None:
    with worker_running(store):
        run = submit(store, "sleep 1000 > /dev/null 2>&1 & echo $!")
        execution = wait_status(store, run)
    assert execution["status"] == "completed"
    assert wait_gone(int(output(store, run)[0]))


def test_a_command_that_cannot_start_fails_with_why(store: Store, tmp_path: Path) -> None:
    with worker_running(store):
        missing = submit(store, {"argv": ["/no/such/program"]})
        bad_cwd = submit(store, {"argv": ["true"]}, cwd=str(tmp_path / "nope"))
        first, second = wait_status(store, missing), wait_status(store, bad_cwd)
    assert first["status"] == "failed" and first["exit_code"] is None
    assert "could not start '/no/such/program'" in first["error"]
    assert second["status"] == "failed" and "No such file or directory" in second["error"]


def test_the_environment_is_minimal_plus_the_job_env_and_cwd_is_used(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker's own environment holds secrets (a database URL, say).
    monkeypatch.setenv("RUNYARD_SECRET_FOR_TEST", "leak")
    with worker_running(store):
        run = submit(store, {"argv": [PY, "-c", (
            "import os, json; print(json.dumps(sorted(os.environ))); print(os.getcwd()); "
            "print(os.environ['GREETING'])")]}, cwd=str(tmp_path), env={"GREETING": "hi"})
        assert wait_status(store, run)["status"] == "completed"
    names, cwd, greeting = output(store, run)
    assert not any(n.startswith("RUNYARD_") for n in json.loads(names))
    assert {"PATH", "PYTHONUNBUFFERED", "GREETING"} <= set(json.loads(names))
    assert (cwd, greeting) == (str(tmp_path), "hi")
