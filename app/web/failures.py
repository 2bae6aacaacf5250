"""The page's answer when the database fails: a 503 that says what and what to do.

``app.api.errors`` classifies the failure (disk full, read-only, unavailable)
and, for a page path, hands it to :func:`page_error` (wired by the app
factory as ``app.state.page_error``, so the API never imports the web layer).
The answer takes the place of what was asked for, like the page's other error
partials: never a blank list, and the run form keeps its place on the page.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from app.store.errors import StorageFailure
from app.times import now_ms
from app.web.context import PageContext, parse_state
from app.web.templating import render

TITLES = {
    "storage_full": "The database's disk is full",
    "storage_read_only": "The database is read-only",
    "storage_unavailable": "The database is unavailable",
}


def page_error(request: Request, failure: StorageFailure) -> Response:
    """The 503 page, or fragment for an htmx request, for ``failure``."""
    headers = {"Retry-After": str(failure.retry_after_s)}
    title = TITLES.get(failure.code, TITLES["storage_unavailable"])
    if request.headers.get("HX-Request") != "true":
        ctx = PageContext(state=parse_state([]), now=now_ms(), command_text="",
                          error=f"{title}: {failure.message}", status=503,
                          extra={"full": True})
        return render(request, "runs.html", {"ctx": ctx, "reset_href": "/"}, status=503,
                      headers=headers)
    target = request.headers.get("HX-Target") or "view"
    # A failed view must not become the address bar's URL.
    headers["HX-Push-Url"] = "false"
    if target == "run-form":
        # The form again, open, with the reason where its errors go.
        return render(request, "_run_form.html",
                      {"form": {}, "errors": {"command": f"{title}: {failure.message}"}},
                      status=503, headers=headers)
    # Only this site's path and query: the header is the client's to set.
    current = urlsplit(request.headers.get("HX-Current-URL") or "/")
    retry = (current.path if current.path.startswith("/") else "/") + (
        f"?{current.query}" if current.query else "")
    return render(request, "_storage_error.html",
                  {"title": title, "message": failure.message, "target": target,
                   "code": failure.code, "retry_href": retry}, status=503, headers=headers)
