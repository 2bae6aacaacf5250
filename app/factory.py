"""The one app factory: ``create_app(settings)`` builds the Starlette app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from app import api, web
from app.api.body import BodyLimitMiddleware
from app.api.errors import EXCEPTION_HANDLERS
from app.db.engine import open_database
from app.paths import STATIC_DIR
from app.settings import Settings
from app.store import Store


def create_app(settings: Settings) -> Starlette:
    """Build the app; the lifespan opens the database and closes it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = open_database(settings.database_url, settings.read_pool_size)
        app.state.store = Store(db)
        try:
            yield
        finally:
            db.dispose()

    app = Starlette(
        routes=[
            *api.routes,
            *web.routes,
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
