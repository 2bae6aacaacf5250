"""The one app factory: ``create_app(settings)`` builds the Starlette app."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from app import api, web
from app.api.body import BodyLimitMiddleware
from app.api.errors import EXCEPTION_HANDLERS
from app.api.live_writes import LiveWriter
from app.auth import signin
from app.auth.authenticator import Authenticator
from app.auth.middleware import AuthMiddleware
from app.db.dialect import Dialect
from app.db.engine import Database, open_database
from app.limits.middleware import limits
from app.live import routes as live_routes
from app.live.hub import Hub
from app.live.notifier import Notifier
from app.live.pg_listen import listen
from app.otlp.writer import TraceWriter
from app.paths import STATIC_DIR
from app.runner.pool import Pool
from app.runner.retention import prune_forever
from app.settings import Settings
from app.store import Store
from app.web import jobs as web_jobs

log = logging.getLogger("runyard")


async def _connections_back(db: Database, timeout_s: float = 5.0) -> None:
    """Wait until every pooled connection is back. Cancelling a task that awaits
    ``run_in_threadpool`` (the hub's tailer, on shutdown) does not stop its
    thread; disposing the engines under that thread would orphan its connection
    (psycopg then warns when it is collected)."""
    pools = {id(e.pool): e.pool for e in (db.write_engine, db.read_engine)}.values()
    deadline = time.monotonic() + timeout_s
    while (any(getattr(p, "checkedout", lambda: 0)() for p in pools)
           and time.monotonic() < deadline):
        await asyncio.sleep(0.005)


async def _bounded(step: Awaitable[object], name: str, timeout_s: float) -> None:
    """Await one shutdown step, but never for ever: a stuck step is logged and
    left behind so the process can still exit."""
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except asyncio.CancelledError:
        # A task we cancelled ends so; only our own cancellation goes on up.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except TimeoutError:
        log.warning("shutdown: %s did not stop within %.0f s; going on", name, timeout_s)


def create_app(settings: Settings) -> Starlette:
    """Build the app; the lifespan opens the database and closes it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = open_database(settings.database_url, settings.read_pool_size)
        notifier = Notifier(asyncio.get_running_loop())
        store = Store(db, on_commit=notifier.publish_threadsafe, reuse_s=settings.page_reuse_s)
        postgres = db.dialect is Dialect.POSTGRESQL
        hub = Hub(store, notifier,
                  idle_poll_s=settings.live_backstop_s if postgres else settings.live_poll_s,
                  coalesce_s=0.002, queue_size=settings.live_queue_size)
        app.state.store, app.state.hub = store, hub
        # OTLP exports arriving together share a transaction (app.otlp.writer).
        app.state.otlp_writer = TraceWriter(store)
        # So do the live endpoints' writes (app.api.live_writes).
        app.state.live_writer = LiveWriter(store)
        # One key signs session cookies and list cursors; from the database
        # unless configured, so every replica on the same database agrees.
        secret = (settings.secret_key.encode() if settings.secret_key
                  else await run_in_threadpool(store.server_secret))
        store.cursor_key = secret
        app.state.secret = secret
        app.state.auth = Authenticator(store, secret, settings.auth_cache_s,
                                       settings.cookie_secure)
        await hub.start()
        listener = asyncio.create_task(listen(db.url, notifier)) if postgres else None
        # Running commands (issue 5): workers in this process, and retention.
        runner = Pool(store, settings) if settings.allow_exec else None
        app.state.runner = runner
        if runner is not None:
            await runner.start()
        stopping = asyncio.Event()
        pruner = (asyncio.create_task(prune_forever(store, settings.retention_days, stopping))
                  if settings.retention_days > 0 else None)
        try:
            yield
        finally:
            stopping.set()
            if pruner is not None:
                await _bounded(pruner, "retention", 10)
            if runner is not None:
                await _bounded(runner.stop(), "runner", settings.worker_drain_s + 15)
            if listener is not None:
                listener.cancel()
                await _bounded(listener, "listener", 5)
            await _bounded(hub.stop(), "live hub", 5)
            await _connections_back(db)
            db.dispose()

    app = Starlette(
        routes=[
            *api.routes,
            *live_routes.routes,
            *web.routes,
            # The page's job forms (issue 5); may move into app.web.routes.
            *web_jobs.routes,
            *signin.routes,
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
                    # Who is asking (issue 7): every request but /healthz, /static
                    # and the sign-in page needs a token once one exists.
                    Middleware(AuthMiddleware),
                    Middleware(limits, settings=settings)],  # after auth: keys on its principal
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.settings = settings
    # The page's renderings of rows and trace events, for `format=html` streams.
    app.state.live_html = web.live_html
    app.state.page_error = web.page_error   # the page's 503 when the database fails
    return app
