"""The Jinja environment (built once) and the HTML response with its headers."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from app.paths import TEMPLATES_DIR
from app.store.inputs import EVENT_TYPES
from app.web import format as fmt
from app.web.context import auth_of

# No inline script or style anywhere: recorded text that slipped through
# escaping still could not run. SVG presentation attributes are not styles.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # The same URL answers with the page or a fragment: caches must keep them apart.
    "Vary": "HX-Request, HX-Target",
    "Cache-Control": "no-cache",
}


def _env() -> Environment:
    # auto_reload off: templates change only with a new release (a restart),
    # and the check costs a stat() of the file at every include of every request.
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      auto_reload=False)
    env.filters.update(utc=fmt.utc, iso=fmt.iso, clock=fmt.clock, duration=fmt.duration,
                       count=fmt.count, first_line=fmt.first_line)
    env.globals["relative"] = fmt.relative
    # Who is signed in and the CSRF token every form carries (issue 7).
    env.globals["auth_of"] = auth_of
    # The SSE event names of a run's stream that the live drawer listens to.
    env.globals["live_event_types"] = ",".join(EVENT_TYPES)
    return env


templates = Jinja2Templates(env=_env())


def render(request: Request, name: str, context: dict[str, Any], status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    """A template as an HTML response with the page's security and caching headers."""
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(HEADERS)
    if headers:
        response.headers.update(headers)
    return response
