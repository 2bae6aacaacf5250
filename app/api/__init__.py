"""The JSON API: routes over the store, one error shape, OpenAPI."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from app.api import executions, jobs, openapi, otlp
from app.api.errors import error_response


async def healthz(request: Request) -> JSONResponse:
    try:
        ok = await run_in_threadpool(request.app.state.store.ping)
    except Exception:
        ok = False
    if not ok:
        return error_response("unavailable", "the database does not answer")
    return JSONResponse({"ok": True})


routes: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    *executions.routes,
    *jobs.routes,
    *openapi.routes,
    *otlp.routes,
]
