"""Start-up code the benchmarks share: a ``runyard serve`` subprocess on a free
port, and what /proc says about it (CPU seconds, memory).

The server is started with ``python -m app.cli serve`` from the repository
root, so a benchmark measures exactly what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> None:
    """Soft file-descriptor limit up to the hard one: hundreds of streams need it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(db: Path, port: int, env: dict[str, str] | None = None,
                 log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """``runyard serve --no-demo`` on a SQLite file, once ``/healthz`` answers.

    ``env`` adds ``RUNYARD_*`` settings; ``log`` receives the server's stderr
    (inherited when None)."""
    full_env = {**os.environ, "RUNYARD_DATABASE_URL": f"sqlite:///{db}", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--no-demo", "--port", str(port)],
        cwd=ROOT, env=full_env, stderr=log, preexec_fn=raise_fd_limit)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited at start-up (status {proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not gone after 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants: the server is all of them when it
    serves from worker processes (``serve --workers``)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def cpu_by_process(pid: int) -> dict[int, float]:
    """User + system CPU seconds of the process and of each live descendant."""
    out = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError):   # one that has just ended
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process and its live descendants have used."""
    return sum(cpu_by_process(pid).values())


def memory_kb(pid: int) -> dict[str, int]:
    """The ``Vm*`` and ``Rss*`` lines of /proc/PID/status in KB, summed over the
    process and its live descendants (VmRSS = RssAnon + RssFile + RssShmem:
    SQLite's mmap of the database file counts in RssFile)."""
    out: dict[str, int] = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError):   # one that has just ended
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name.startswith(("Vm", "Rss")):
                    out[name] = out.get(name, 0) + int(value.split()[0])
    return out


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """One memory figure of the process in KB (0 when /proc does not have it)."""
    return memory_kb(pid).get(field, 0)
