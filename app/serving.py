"""How ``runyard serve`` runs the app under uvicorn: in its own process, or in
several worker processes that share the listening socket (``--workers N``).

One process runs Python on one core at a time (the GIL): the soak's full load
(``bench/soak.py``) needs about one core of it and more on a slow machine,
while a second core sits half idle. Worker processes are uvicorn's own
supervisor (``uvicorn.supervisors.Multiprocess``): it binds the socket once,
spawns the workers, restarts one that dies and passes SIGINT/SIGTERM on. Each
worker builds its own app from ``RUNYARD_*`` variables, which the parent sets
from its resolved settings (flags included) before spawning, so every worker
runs with exactly the parent's settings.

What that means for the rest of the app, each already so for replicas on one
database (docs/DESIGN.md, "Scale-out"):

- The database is the only shared state. Session cookies and list cursors are
  signed with the key kept in the database, so any worker accepts another's.
- Every worker's live hub reads the same change feed: on SQLite it learns of
  another worker's writes by polling (``live_poll_s``) when its own commits
  do not wake it first; on PostgreSQL by NOTIFY.
- On SQLite the workers' writes take turns at a kernel lock beside the file
  (app/db/writelock.py), then at SQLite's own (``BEGIN IMMEDIATE``).
- What is counted in memory is counted per worker: the rate limit, the stream
  cap, requests in flight, the token cache. A client whose connections land on
  several workers may get up to N times the configured rate and streams.
- With ``--allow-exec`` each worker runs its own pool of
  ``worker_concurrency`` jobs; a job is claimed by one of them only (leases).
- Migrations and demo data run once, in the parent, before any worker starts.
"""

from __future__ import annotations

import os

import uvicorn
from starlette.applications import Starlette

from app.factory import create_app
from app.process import freeze_startup_objects, tune_process
from app.settings import Settings

# uvicorn's own options, the same for one process and for workers.
LOG_LEVEL = "warning"
GRACEFUL_SHUTDOWN_S = 5


def serve(settings: Settings) -> None:
    """Serve until stopped (SIGINT or SIGTERM): in this process when
    ``settings.workers`` is 1, else in that many worker processes."""
    if settings.workers <= 1:
        app = create_app(settings)
        freeze_startup_objects()
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=LOG_LEVEL,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        return
    # The spawned workers inherit this environment (and nothing else of ours).
    os.environ.update(settings.to_env())
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=settings.workers,
                host=settings.host, port=settings.port, log_level=LOG_LEVEL,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def worker_app() -> Starlette:
    """The app of one worker process (uvicorn calls this in the child): the
    parent's settings, read back from the environment, and the process tuned
    as ``serve`` tunes its own."""
    tune_process()
    app = create_app(Settings.from_env())
    freeze_startup_objects()
    return app
