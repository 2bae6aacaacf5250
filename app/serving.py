"""How ``runyard serve`` runs the app under uvicorn: in its own process, or in
several worker processes on one address (``--workers N``).

One process runs Python on one core at a time (the GIL): the soak's full load
(``bench/soak.py``) needs about one core of it and more on a slow machine,
while a second core sits half idle. Worker processes are uvicorn's own
supervisor (``uvicorn.supervisors.Multiprocess``): it spawns the workers,
restarts one that dies and passes SIGINT/SIGTERM on. Each worker builds its
own app from ``RUNYARD_*`` variables, which the parent sets from its resolved
settings (flags included) before spawning, so every worker runs with exactly
the parent's settings.

Each worker listens on a socket of its own, all bound to the one address with
``SO_REUSEPORT`` (where the system has it), so the kernel spreads new
connections over the workers evenly, by a hash of their addresses. uvicorn
binds one socket for all of them instead, and then the worker that wakes
first accepts every connection waiting (uvloop and asyncio accept in a loop):
200 streams opened together split 140/60 or 129/71 between two idle workers,
and since streams and keep-alive connections stay where they land, the worker
with more sat at its core's limit in the soak while the other idled
(docs/PERFORMANCE.md, "Soak"). Sharing a port this way lets any process of
the same user bind it too, so the parent first binds the address plainly,
which fails while anything listens there, another Runyard included. A worker
that dies takes its socket with it: the connections waiting in that socket's
queue, accepted by no one yet, are reset (with one shared socket they would
have waited for another worker), and new ones go to the others until its
replacement listens.

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
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

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
    config = uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=settings.workers,
                            host=settings.host, port=settings.port, log_level=LOG_LEVEL,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    if not hasattr(socket, "SO_REUSEPORT"):
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    try:
        config.port = port_free(settings.host, settings.port)
    except OSError as exc:
        # With the exit status uvicorn gives when one process cannot bind.
        print(f"runyard serve: cannot listen on {settings.host}:{settings.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    SocketPerWorker(config).run()


def port_free(host: str, port: int) -> int:
    """Bind ``host:port`` without sharing and let go: raises ``OSError`` while
    anything listens there. Returns the port (the one the system chose for 0)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def shared_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``, not yet listening
    (the worker's server calls ``listen``)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class SocketPerWorker(Multiprocess):
    """uvicorn's supervisor, but each worker it starts, at start-up or in place
    of one that died, gets a new socket of its own (``shared_port_socket``).

    The supervisor hands ``self.sockets`` to every worker it spawns, so that
    attribute makes a fresh socket each time it is read. The worker is its only
    holder once spawned (the parent's copy goes with the spawn's pickle), so a
    worker that dies takes its socket out of the kernel's group with it."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config, sockets=[])

    @property  # type: ignore[override]
    def sockets(self) -> list[socket.socket]:
        return [shared_port_socket(self.config.host, self.config.port)]

    @sockets.setter
    def sockets(self, _given: list[socket.socket]) -> None:
        """``Multiprocess.__init__`` stores the sockets it is given; there are none."""


def worker_app() -> Starlette:
    """The app of one worker process (uvicorn calls this in the child): the
    parent's settings, read back from the environment, and the process tuned
    as ``serve`` tunes its own."""
    tune_process()
    app = create_app(Settings.from_env())
    freeze_startup_objects()
    return app
