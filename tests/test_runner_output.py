"""A job's output as events: every line, in order, split, capped, with progress.

Real commands through a real worker, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sys

from app.runner.lines import MAX_PIECE
from app.store import Store
from tests.jobs_support import all_events, output, submit, wait_status, worker_running

PY = sys.executable


def test_50000_lines_are_all_recorded_in_order(store: Store) -> None:
    with worker_running(store):
        run = submit(store, {"argv": [PY, "-c", "for i in range(50000): print(f'line {i}')"]})
        execution = wait_status(store, run, timeout=60)
    assert execution["status"] == "completed"
    assert execution["exit_code"] == 0
    assert output(store, run) == [f"line {i}" for i in range(50000)]
    seqs = [e["seq"] for e in all_events(store, run)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_300_kb_line_becomes_64_kb_pieces(store: Store) -> None:
    script = "import sys; sys.stdout.write('é' + 'x' * 300000 + '\\nafter\\n')"
    with worker_running(store):
        run = submit(store, {"argv": [PY, "-c", script]})
        assert wait_status(store, run)["status"] == "completed"
    events = all_events(store, run, types=("stdout",))
    pieces = [e["message"] for e in events]
    assert "".join(pieces[:-1]) == "é" + "x" * 300000
    assert pieces[-1] == "after"
    assert all(len(p.encode()) <= MAX_PIECE for p in pieces)
    assert len(pieces) == 6   # 300,002 bytes in 64 KiB pieces, then "after"
    # Every piece but a line's last says the line goes on.
    assert [e["data"] for e in events] == [{"partial": True}] * 4 + [None, None]


def test_stdout_and_stderr_are_read_at_once_and_interleave(store: Store) -> None:
    # Each stream alone is more than a pipe buffer (64 KiB): read one after the
    # other, the command would block forever on the second.
    script = ("import sys, time\n"
              "for i in range(3000):\n"
              "    print(f'out {i}', flush=True)\n"
              "    print(f'err {i}', file=sys.stderr, flush=True)\n"
              "    if i % 500 == 0: time.sleep(0.05)\n")
    with worker_running(store):
        run = submit(store, {"argv": [PY, "-c", script]})
        assert wait_status(store, run)["status"] == "completed"
    assert output(store, run, "stdout") == [f"out {i}" for i in range(3000)]
    assert output(store, run, "stderr") == [f"err {i}" for i in range(3000)]
    kinds = [e["type"] for e in all_events(store, run) if e["type"] in ("stdout", "stderr")]
    # Recorded as they came: stderr lines appear before stdout has finished.
    assert kinds.index("stderr") < len(kinds) - kinds[::-1].index("stdout") - 1000


def test_progress_lines_update_the_run_and_stay_after_it_ends(store: Store) -> None:
    script = ('echo "::progress pct=10 stage=fetch::getting pages"; echo plain; '
              'echo "::progress pct=140 stage=load::clamped"; '
              'echo "::progress stage=index::no pct keeps the last"; '
              'echo "::progress pct=abc::not a progress line"')
    with worker_running(store):
        run = submit(store, script)
        execution = wait_status(store, run)
    assert (execution["progress_pct"], execution["progress_stage"]) == (100.0, "index")
    progress = [e for e in all_events(store, run) if e["type"] == "execution.progress"]
    assert [(e["data"]["pct"], e["data"]["stage"], e["message"]) for e in progress] == [
        (10.0, "fetch", "getting pages"), (100.0, "load", "clamped"),
        (100.0, "index", "no pct keeps the last")]
    assert output(store, run) == ["plain", "::progress pct=abc::not a progress line"]


def test_output_over_the_cap_is_drained_and_dropped_with_a_warning(store: Store) -> None:
    # 20,000 lines of 100 bytes (2 MB) against a 100 KB cap; the command must not
    # block on a full pipe, and its exit code still counts.
    script = "for i in range(20000): print(str(i).rjust(100, '.'))\nraise SystemExit(3)"
    with worker_running(store, job_output_cap_bytes=100_000):
        run = submit(store, {"argv": [PY, "-c", script]})
        execution = wait_status(store, run)
    assert (execution["status"], execution["exit_code"]) == ("failed", 3)
    kept = output(store, run)
    assert kept == [str(i).rjust(100, ".") for i in range(len(kept))]
    assert len(kept) == 1000   # 1000 x 100 bytes fill the cap exactly
    warning = [e for e in all_events(store, run) if e["level"] == "warn"]
    assert len(warning) == 1
    assert warning[0]["data"] == {"dropped_bytes": 19000 * 100, "dropped_lines": 19000,
                                  "cap_bytes": 100_000}
    assert execution["warn_count"] == 1


def test_undecodable_bytes_nul_and_crlf_are_stored_safely(store: Store) -> None:
    script = "import sys; sys.stdout.buffer.write(b'bad \\xff byte\\r\\nnul \\x00 here\\nlast')"
    with worker_running(store):
        run = submit(store, {"argv": [PY, "-c", script]})
        assert wait_status(store, run)["status"] == "completed"
    assert output(store, run) == ["bad \ufffd byte", "nul \ufffd here", "last"]
