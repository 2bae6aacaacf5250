"""The one app factory: ``create_app(settings)`` builds the Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from app import api, web
from app.api.body import BodyLimitMiddleware
from app.api.errors import EXCEPTION_HANDLERS
from app.db.dialect import Dialect
from app.db.engine import open_database
from app.live import routes as live_routes
from app.live.hub import Hub
from app.live.notifier import Notifier
from app.live.pg_listen import listen
from app.paths import STATIC_DIR
from app.settings import Settings
from app.store import Store


def create_app(settings: Settings) -> Starlette:
    """Build the app; the lifespan opens the database and closes it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = open_database(settings.database_url, settings.read_pool_size)
        notifier = Notifier(asyncio.get_running_loop())
        store = Store(db, on_commit=notifier.publish_threadsafe)
        postgres = db.dialect is Dialect.POSTGRESQL
        hub = Hub(store, notifier,
                  idle_poll_s=settings.live_backstop_s if postgres else settings.live_poll_s,
                  coalesce_s=0.005, queue_size=settings.live_queue_size,
                  render_row=getattr(app.state, "render_row", None))
        app.state.store, app.state.hub = store, hub
        await hub.start()
        listener = asyncio.create_task(listen(db.url, notifier)) if postgres else None
        try:
            yield
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await hub.stop()
            db.dispose()

    app = Starlette(
        routes=[
            *api.routes,
            *live_routes.routes,
            *web.routes,
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
