"""The one settings object, read from ``RUNYARD_*`` variables and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///data/runyard.db"


def _as_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use 1/0, true/false, yes/no, on/off)")


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Each field ``x`` is read from ``RUNYARD_X``."""

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    demo: bool = True
    demo_executions: int = 3000
    allow_exec: bool = False
    # Server processes sharing the port (`serve --workers`). One process is at
    # most one core of Python; each more adds a core's worth. Limits kept in
    # memory (rate, streams, in flight) are per process.
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    # Requests per second per token (or per client address without one), with
    # bursts of up to rate_limit_burst; either at 0 turns the limit off.
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 200
    # Requests of one kind (read, write, exec) in the app at once; one more
    # waits up to 0.5 s for a slot, then is a 503 `overloaded` (0: no limit).
    max_in_flight: int = 16
    # Concurrent SSE streams per token or address (0: no limit).
    max_streams_per_client: int = 20
    # Extra engine options for tests and benchmarks (e.g. a larger read pool).
    read_pool_size: int = 8
    # Live: how often an idle server looks for other processes' writes on
    # SQLite (PostgreSQL is woken by NOTIFY and polls only as a backstop).
    live_poll_s: float = 0.25
    live_backstop_s: float = 2.0
    # While this process commits more than 50 writes a second, the page's
    # total, facets and chart of one view are counted at most once per this
    # many seconds and reused meanwhile (app/store/reuse.py); 0: always counted.
    page_reuse_s: float = 2.0
    # How many messages a slow SSE client may have waiting before it is dropped.
    live_queue_size: int = 1000
    # Running commands (issue 5). The in-process pool of `serve --allow-exec`
    # and `runyard worker` run this many jobs at once.
    worker_concurrency: int = 4
    # A claimed job's lease; its worker renews it (and reads cancel requests)
    # every heartbeat, so a cancel takes at most a heartbeat to arrive.
    worker_lease_s: float = 30.0
    worker_heartbeat_s: float = 1.0
    # How often an idle worker looks for jobs queued by other processes (on
    # SQLite; PostgreSQL wakes it with NOTIFY and polls once a second).
    worker_poll_s: float = 0.05
    # SIGTERM, then SIGKILL this long after, to a job's whole process group.
    worker_kill_grace_s: float = 5.0
    # On shutdown: how long running jobs may finish before they are stopped.
    worker_drain_s: float = 5.0
    job_timeout_s: float = 600.0
    job_max_timeout_s: float = 86_400.0
    job_output_cap_bytes: int = 10 * 1024 * 1024
    # Finished executions older than this are deleted (0: never).
    retention_days: float = 0.0
    # Auth (issue 7). Token lookups (and "is there any token?") are cached this
    # long per process, so a revoke takes effect within it everywhere; 0: no cache.
    auth_cache_s: float = 2.0
    # Mark the session cookie Secure (only sent over HTTPS): set it behind TLS.
    cookie_secure: bool = False
    # Signs session cookies and list cursors. Empty: a random key kept in the
    # database (table server_key), the same for every replica.
    secret_key: str = field(default="", repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from the environment; keyword overrides (CLI flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(f"RUNYARD_{f.name.upper()}")
            if raw is None:
                continue
            try:
                if f.type == "bool":
                    values[f.name] = _as_bool(raw)
                elif f.type == "int":
                    values[f.name] = int(raw)
                elif f.type == "float":
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ValueError(f"RUNYARD_{f.name.upper()}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``RUNYARD_*`` variables that :meth:`from_env` reads back as these
        settings (``extra`` is not one of them: it is for tests in one process).
        How ``serve --workers`` hands its settings to the worker processes."""
        out: dict[str, str] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f"RUNYARD_{f.name.upper()}"] = (
                ("1" if value else "0") if isinstance(value, bool) else str(value))
        return out

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def sqlite_path(self) -> Path | None:
        """The database file for a SQLite URL, else None."""
        for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
            if self.database_url.startswith(prefix):
                return Path(self.database_url[len(prefix):])
        return None
