"""Routes of the runs page: ``GET /`` (and ``/runs``), its fragments, and helpers.

The contact-app idiom: one URL answers with the whole page, or, for an htmx
request, with the fragment its ``HX-Target`` names (``Vary`` says so). A
``cmd=`` parameter is the filter command; it is parsed into the real
parameters and the browser is sent to (or, with htmx, pushed to) their URL.
Every read is limited to the principal's ``read_scope`` (see ``build.scoped``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth.principal import principal_of
from app.store import Store
from app.store.errors import BadParameter, NotFound
from app.times import now_ms
from app.web import build, drawer, jobs, urls
from app.web import format as fmt
from app.web.context import PageContext, parse_state
from app.web.filter_command import CommandError, parse_command, render_command
from app.web.suggest import suggest
from app.web.templating import HEADERS, render

# HX-Target (the element an htmx request swaps) -> the partial that answers it.
FRAGMENTS = {
    "view": "_view.html", "rail": "_rail.html", "chart": "_chart.html", "list": "_list.html",
    "more": "_rows.html", "drawer": "_drawer.html", "events-more": "_drawer_events_rows.html",
    "tool-facet": "_rail_tools.html",
}
KEEP_ON_COMMAND = ("run", "tab", "live")


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _fragment(request: Request) -> tuple[bool, str | None]:
    """(is htmx, fragment template or None for the whole page)."""
    htmx = (request.headers.get("HX-Request") == "true"
            and request.headers.get("HX-History-Restore-Request") != "true")
    if not htmx:
        return False, None
    return True, FRAGMENTS.get(request.headers.get("HX-Target") or "", "_view.html")


def _apply_command(request: Request, items: list[tuple[str, str]], htmx: bool,
                   ) -> tuple[list[tuple[str, str]], str, tuple[CommandError, ...]]:
    text = next(v for n, v in items if n == "cmd")
    command = parse_command(text)
    source = items
    current = request.headers.get("HX-Current-URL") if htmx else None
    if current:
        # The drawer may have changed since the form was drawn: trust the live URL.
        source = parse_qsl(urlsplit(current).query, keep_blank_values=True)
    keep = [(n, v) for n, v in source if n in KEEP_ON_COMMAND]
    return [*command.params, *keep], text, command.errors


async def runs(request: Request) -> Response:
    """The runs page, or the fragment an htmx request asks for."""
    htmx, fragment = _fragment(request)
    items = list(request.query_params.multi_items())
    text, errors = None, ()
    if any(n == "cmd" for n, _ in items):
        items, text, errors = _apply_command(request, items, htmx)
        if errors and htmx:
            return render(request, "_command_help.html",
                          {"errors": errors, "suggestions": [], "text": text}, status=400,
                          headers={"HX-Retarget": "#cmd-help", "HX-Reswap": "innerHTML",
                                   "HX-Push-Url": "false"})
        if not errors and not htmx:
            # The canonical URL, so the address bar holds parameters, not the command.
            return RedirectResponse(urls.href(urls.canonical(items)), status_code=303)
    try:
        state = build.scoped(parse_state(items), principal_of(request).read_scope)
    except BadParameter as exc:
        return _error(request, fragment, exc.message, text)
    ctx = PageContext(state=state, now=now_ms(), command_text=text or render_command(
        state.filter_items), command_errors=errors, status=400 if errors else 200)
    ctx.extra["full"] = fragment is None
    store = _store(request)
    try:
        if fragment == "_drawer_events_rows.html":
            await run_in_threadpool(build.more_events, store, ctx)
        else:
            await run_in_threadpool(build.fill, store, ctx, fragment)
    except NotFound as exc:
        return _error(request, fragment, exc.message, text, status=404)
    except BadParameter as exc:     # a cursor that does not decode, and the like
        return _error(request, fragment, exc.message, text)
    if ctx.drawer is not None:
        ctx.extra["job_controls"] = await run_in_threadpool(
            jobs.controls_for, store, request, ctx.drawer.run)
    headers = {}
    if text is not None and htmx:
        headers["HX-Push-Url"] = urls.href(state.items)
    if ctx.extra.get("drawer_missing") and fragment == "_drawer.html":
        ctx.status = 404
    return render(request, fragment or "runs.html", {"ctx": ctx}, status=ctx.status,
                  headers=headers)


def _error(request: Request, fragment: str | None, message: str, text: str | None,
           status: int = 400) -> Response:
    """The error partial in place of what was asked for: never a blank list."""
    target = request.headers.get("HX-Target") or "view"
    reset = urls.href(())
    if fragment is not None:
        # A boosted link would otherwise push the URL of a view that failed.
        return render(request, "_error.html",
                      {"message": message, "target": target, "reset_href": reset},
                      status=status, headers={"HX-Push-Url": "false"})
    ctx = PageContext(state=parse_state([]), now=now_ms(), command_text=text or "",
                      error=message, status=status, extra={"full": True})
    return render(request, "runs.html", {"ctx": ctx, "reset_href": reset}, status=status)


async def command_help(request: Request) -> Response:
    """Inline errors and suggestions for the command text being typed."""
    text = request.query_params.get("cmd", "")[:2000]
    store = _store(request)
    scope = principal_of(request).read_scope
    errors = parse_command(text).errors if text.strip() else ()
    known_cache: dict[str, list[str]] = {}

    def known(kind: str) -> list[str]:
        # Names are data: suggest only those of runs this reader may see.
        if kind not in known_cache:
            known_cache[kind] = store.known_values(kind, 1000, scope_id=scope)
        return known_cache[kind]

    suggestions = await run_in_threadpool(suggest, text, known)
    if text and not text[-1].isspace():
        # The token still being typed is not wrong yet: judge it once it is finished.
        errors = tuple(e for e in errors
                       if e.end < len(text) or e.message.startswith("unknown key"))
    return render(request, "_command_help.html",
                  {"errors": errors, "suggestions": suggestions, "text": text})


async def full_value(request: Request) -> Response:
    """The whole of a value the drawer cut at 64 KB, as escaped text."""
    run_id = request.path_params["run_id"]
    part = request.query_params.get("part", "")
    ref = request.query_params.get("ref", "")
    try:
        raw = await run_in_threadpool(_store(request).full_value, run_id, part, ref,
                                      scope_id=principal_of(request).read_scope)
    except KeyError:
        return PlainTextResponse("part/ref: not a value of a run", 400, headers=HEADERS)
    except (LookupError, NotFound):
        return PlainTextResponse("no such value", 404, headers=HEADERS)
    text = fmt.json_text(raw) if raw is not None else ""
    if request.headers.get("HX-Request") == "true":
        return render(request, "_value.html", {"text": text})
    return PlainTextResponse(text, headers=HEADERS)


async def tool_call(request: Request) -> Response:
    """One waterfall row's args, result and error (fetched when the row is opened)."""
    run_id = request.path_params["run_id"]
    try:
        call = await run_in_threadpool(_store(request).tool_call, run_id,
                                       request.path_params["tool_call_id"],
                                       scope_id=principal_of(request).read_scope)
    except NotFound as exc:
        return render(request, "_error.html", {"message": exc.message, "target": "tool-call",
                                               "reset_href": "/"}, status=404)
    return render(request, "_tool_call.html",
                  {"call": call, "values": drawer.tool_call_values(run_id, call)})


routes = [
    Route("/", runs, methods=["GET"]),
    Route("/runs", runs, methods=["GET"]),
    Route("/runs/command", command_help, methods=["GET"]),
    Route("/runs/{run_id}/value", full_value, methods=["GET"]),
    Route("/runs/{run_id}/tool-calls/{tool_call_id}", tool_call, methods=["GET"]),
]
