"""HTML pages: the runs page (``GET /``) and its htmx fragments."""

from __future__ import annotations

from starlette.routing import BaseRoute

from app.web import pages
from app.web.failures import page_error
from app.web.live import live_html

routes: list[BaseRoute] = [*pages.routes]

__all__ = ["live_html", "page_error", "routes"]
