"""The page's job forms: "Run command", and Approve / Decline / Cancel / Re-run.

Plain HTML forms that POST here and work without JavaScript (a 303 back to
the page with the run's drawer open); with htmx, the answer is an
``HX-Location`` that swaps just the drawer (``#drawer``) and pushes its URL.
Every handler applies the same rules as the JSON job routes
(``app.exec_policy``): running commands must be allowed, and a cross-site or
rebound-host form post is refused.

``job_controls()`` builds what ``_job_controls.html`` shows, for the drawer
(``GET /runs/{id}/job`` answers the partial alone, for an htmx refresh).
A new run lands in the principal's ``write_scope``; the buttons act only on
runs of its ``read_scope`` (another scope's run is "not found").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth.principal import principal_of
from app.durations import parse_duration
from app.exec_policy import exec_refusal
from app.store import Store
from app.store.errors import NotFound, StoreError
from app.store.inputs import JobSubmit
from app.store.jobs import Limits
from app.web.templating import HEADERS, render

# Parameters of the page that describe the open drawer: a new run drops them.
_DRAWER_PARAMS = frozenset({"run", "tab", "ev_level", "ev_after", "cursor"})


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _limits(request: Request) -> Limits:
    s = request.app.state.settings
    return Limits(timeout_default_s=s.job_timeout_s, timeout_max_s=s.job_max_timeout_s)


def run_href(request: Request, run_id: str) -> str:
    """The current page (its filters kept) with ``run_id``'s drawer open."""
    current = request.headers.get("HX-Current-URL") or request.headers.get("referer") or ""
    parts = urlsplit(current)
    same_site = not parts.netloc or parts.netloc == request.headers.get("host")
    items = parse_qsl(parts.query, keep_blank_values=True) if same_site else []
    kept = [(n, v) for n, v in items if n not in _DRAWER_PARAMS]
    return "/?" + urlencode([*kept, ("run", run_id)])


def _go(request: Request, run_id: str) -> Response:
    url = run_href(request, run_id)
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=200, headers={
            **HEADERS, "HX-Location": json.dumps({"path": url, "target": "#drawer"})})
    return RedirectResponse(url, status_code=303)


def _refused(request: Request) -> Response | None:
    refusal = exec_refusal(request)
    if refusal is None:
        return None
    return PlainTextResponse(refusal[0], status_code=403, headers=HEADERS)


def _wake(request: Request) -> None:
    runner = getattr(request.app.state, "runner", None)
    if runner is not None:
        runner.wake()


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in text.replace("\n", ",").split(","):
        if part.strip():
            key, sep, value = part.strip().partition("=")
            if not sep or not key.strip():
                raise ValueError(f"label {part.strip()!r}: use key=value")
            labels[key.strip()] = value.strip()
    return labels


async def submit(request: Request) -> Response:
    """``POST /runs/jobs``: the "Run command" form."""
    if (refused := _refused(request)) is not None:
        return refused
    form = await request.form()
    values = {k: str(form.get(k, "")) for k in ("command", "name", "timeout", "labels")}
    values["approval"] = "on" if form.get("approval") else ""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"command": {"shell": values["command"].strip()},
                            "trigger_kind": "web", "requires_approval": bool(values["approval"])}
    if not values["command"].strip():
        errors["command"] = "type a command to run"
    if values["name"].strip():
        body["name"] = values["name"].strip()
    for field, parse, key in (("timeout", parse_duration, "timeout_s"),
                              ("labels", _labels, "labels")):
        if values[field].strip():
            try:
                body[key] = parse(values[field])
            except ValueError as exc:
                errors[field] = str(exc)
    if not errors:
        try:
            data = JobSubmit.model_validate(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            errors["command"] = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    if errors:
        return render(request, "_run_form.html", {"form": values, "errors": errors},
                      status=422)
    who = principal_of(request)
    answer, _ = await run_in_threadpool(_store(request).submit_job, data, _limits(request),
                                        who.write_scope, actor=who.actor)
    _wake(request)
    return _go(request, answer["execution_id"])


async def act(request: Request, action: str) -> Response:
    """``POST /runs/{run_id}/{action}``: approve, reject, cancel or rerun."""
    if (refused := _refused(request)) is not None:
        return refused
    run_id = request.path_params["run_id"]
    store = _store(request)
    who = principal_of(request)
    scope, actor = who.read_scope, who.actor
    try:
        if action in ("approve", "reject"):
            await run_in_threadpool(store.decide_approval, run_id, action == "approve",
                                    scope_id=scope, actor=actor)
        elif action == "cancel":
            _, owner = await run_in_threadpool(store.cancel_job, run_id, scope_id=scope,
                                               actor=actor)
            runner = getattr(request.app.state, "runner", None)
            if owner is not None and runner is not None and runner.worker.owner == owner:
                runner.cancel(run_id)
        else:
            run_id = (await run_in_threadpool(store.rerun_job, run_id, _limits(request),
                                              "web", scope_id=scope,
                                              actor=actor))["execution_id"]
    except NotFound as exc:
        return PlainTextResponse(exc.message, status_code=404, headers=HEADERS)
    except StoreError as exc:
        # A stale button (the run moved on meanwhile): show the run as it is now.
        if request.headers.get("HX-Request") != "true":
            return PlainTextResponse(exc.message, status_code=409, headers=HEADERS)
    _wake(request)
    return _go(request, run_id)


def job_controls(store: Store, run: dict[str, Any], *, allow_exec: bool,
                 href: Callable[[str], str],
                 scope_id: str | None = None) -> dict[str, Any] | None:
    """What ``_job_controls.html`` needs (its ``jc``) for ``run``, or None when
    the run is not a job and nothing links to it. ``run`` may be a raw row or a
    wire object (only ``id``, ``status`` and ``rerun_of`` are read); ``href``
    gives the page URL that opens a run's drawer; ``allow_exec`` shows the
    buttons (the POST handlers check the rest); ``scope_id`` is the reader's.
    Call it in a worker thread."""
    try:
        job = store.job_view(run["id"], scope_id=scope_id)
    except NotFound:
        return None
    if job is None and not run.get("rerun_of"):
        return None
    status = run["status"]
    return {
        "run": run, "job": job, "allow_exec": allow_exec,
        # Waiting for approval, Decline is the cancel.
        "can_cancel": job is not None and status not in (
            "completed", "failed", "cancelled", "timed_out")
        and not job["cancel_requested"] and not job["awaiting_approval"],
        "rerun_of_href": href(run["rerun_of"]) if run.get("rerun_of") else None,
        "reruns": [{**r, "href": href(r["id"])} for r in (job or {}).get("reruns", [])],
    }


def controls_for(store: Store, request: Request, run: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`job_controls` for this request (links keep the page's filters)."""
    return job_controls(store, run, allow_exec=exec_refusal(request) is None,
                        href=lambda run_id: run_href(request, run_id),
                        scope_id=principal_of(request).read_scope)


async def controls(request: Request) -> Response:
    """``GET /runs/{run_id}/job``: the controls alone (for an htmx refresh)."""
    run_id = request.path_params["run_id"]
    store = _store(request)
    try:
        run, _ = await run_in_threadpool(store.get_execution, run_id,
                                         scope_id=principal_of(request).read_scope)
    except NotFound as exc:
        return PlainTextResponse(exc.message, status_code=404, headers=HEADERS)
    jc = await run_in_threadpool(controls_for, store, request, run)
    return render(request, "_job_controls.html", {"jc": jc})


def _action(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await act(request, name)
    endpoint.__name__ = f"job_{name}"
    return endpoint


routes = [
    Route("/runs/jobs", submit, methods=["POST"]),
    Route("/runs/{run_id}/job", controls, methods=["GET"]),
    *(Route(f"/runs/{{run_id}}/{name}", _action(name), methods=["POST"])
      for name in ("approve", "reject", "cancel", "rerun")),
]
