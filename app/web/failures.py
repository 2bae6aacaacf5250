"""The page's answer when it cannot be served right now: the database fails
(503), the server is at capacity (503) or the client is over its request rate
(429). It says what and what to do.

``app.api.errors`` classifies a database failure (disk full, read-only,
unavailable) and the rate limit refuses a request; for a page path, each hands
it to :func:`page_error` (wired by the app factory as ``app.state.page_error``,
so neither imports the web layer), and a JSON path gets the JSON error. The
answer takes the place of what was asked for, like the page's other error
partials: never a blank list, and the run form keeps its place on the page.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from app.times import now_ms
from app.web.context import PageContext, parse_state
from app.web.templating import render

TITLES = {
    "storage_full": "The database's disk is full",
    "storage_read_only": "The database is read-only",
    "storage_unavailable": "The database is unavailable",
    "rate_limited": "Too many requests",
    "overloaded": "The server is busy",
}


def page_error(request: Request, code: str, message: str, *, status: int,
               retry_after_s: int) -> Response:
    """The error page, or fragment for an htmx request, for the error ``code``
    (a key of ``TITLES``) with the API's ``message`` and ``Retry-After``."""
    headers = {"Retry-After": str(retry_after_s)}
    title = TITLES.get(code, TITLES["storage_unavailable"])
    if request.headers.get("HX-Request") != "true":
        ctx = PageContext(state=parse_state([]), now=now_ms(), command_text="",
                          error=f"{title}: {message}", status=status,
                          extra={"full": True,
                                 "retry_href": _this_site(request.url.path, request.url.query)})
        return render(request, "runs.html", {"ctx": ctx, "reset_href": "/"}, status=status,
                      headers=headers)
    target = request.headers.get("HX-Target") or "view"
    # A failed view must not become the address bar's URL.
    headers["HX-Push-Url"] = "false"
    if target == "run-form":
        # The form again, open, with the reason where its errors go.
        return render(request, "_run_form.html",
                      {"form": {}, "errors": {"command": f"{title}: {message}"}},
                      status=status, headers=headers)
    current = urlsplit(request.headers.get("HX-Current-URL") or "/")
    return render(request, "_unavailable.html",
                  {"title": title, "message": message, "target": target, "code": code,
                   "retry_href": _this_site(current.path, current.query)},
                  status=status, headers=headers)


def _this_site(path: str, query: str) -> str:
    """``path?query`` as a link that stays on this site. Both come from the
    client (a refused request's path, or htmx's header): ``//host/x`` would be
    a link to another host, so leading slashes collapse to one."""
    return "/" + path.lstrip("/") + (f"?{query}" if query else "")
