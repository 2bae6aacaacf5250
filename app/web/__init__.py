"""HTML pages. Until the runs page lands, ``/`` is a small overview."""

from __future__ import annotations

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from app.paths import TEMPLATES_DIR
from app.store.filters import ExecutionFilter
from app.store.params import ListQuery

templates = Jinja2Templates(env=Environment(
    loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(default=True)))


async def index(request: Request) -> Response:
    query = ListQuery(filter=ExecutionFilter(), limit=20)
    page = await run_in_threadpool(request.app.state.store.list_executions, query)
    return templates.TemplateResponse(request, "index.html", {"page": page})


routes: list[BaseRoute] = [Route("/", index, methods=["GET"])]
