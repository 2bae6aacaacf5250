"""JSON routes for running commands: submit, approve, reject, cancel, re-run.

All of them answer 403 unless the server allows running commands (see
``app.exec_policy``); each answers ``{"execution_id", "status"}``. The worker
pool, when this process has one, is told at once: a submission or approval
wakes it, a cancel stops the process now rather than at the next lease beat.
A submission runs in the principal's ``write_scope``; the other routes act only
on runs of its ``read_scope`` (another scope's run is a 404).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.api.body import read_model
from app.api.errors import ApiError
from app.auth.principal import principal_of
from app.exec_policy import exec_refusal
from app.store import Store
from app.store.errors import execution_not_found
from app.store.inputs import JobAction, JobSubmit
from app.store.jobs import Limits


def job_limits(request: Request) -> Limits:
    """The submission limits of this server's settings."""
    s = request.app.state.settings
    return Limits(timeout_default_s=s.job_timeout_s, timeout_max_s=s.job_max_timeout_s)


def _allowed(request: Request) -> Store:
    refusal = exec_refusal(request)
    if refusal is not None:
        raise ApiError("forbidden", *refusal)
    store: Store = request.app.state.store
    return store


def _pool(request: Request) -> Any:
    return getattr(request.app.state, "runner", None)


def _execution_id(request: Request) -> str:
    execution_id: str = request.path_params["execution_id"]
    if "\x00" in execution_id:
        raise execution_not_found(execution_id)
    return execution_id


async def _action(request: Request) -> JobAction:
    # The body is optional: an empty POST is the usual case.
    if not await request.body():
        return JobAction()
    return await read_model(request, JobAction)


def _accepted(answer: dict[str, Any], status: int = 202) -> JSONResponse:
    return JSONResponse({"execution_id": answer["execution_id"], "status": answer["status"]},
                        status_code=status)


async def submit(request: Request) -> JSONResponse:
    store = _allowed(request)
    data = await read_model(request, JobSubmit)
    who = principal_of(request)
    answer, created = await run_in_threadpool(store.submit_job, data, job_limits(request),
                                              who.write_scope, actor=who.actor)
    if created and answer["status"] == "queued" and _pool(request) is not None:
        _pool(request).wake()
    return _accepted(answer, 202 if created else 200)


async def _decide(request: Request, accept: bool) -> JSONResponse:
    store = _allowed(request)
    action = await _action(request)
    who = principal_of(request)
    answer = await run_in_threadpool(store.decide_approval, _execution_id(request), accept,
                                     action.reason, scope_id=who.read_scope, actor=who.actor)
    if accept and _pool(request) is not None:
        _pool(request).wake()
    return _accepted(answer)


async def approve(request: Request) -> JSONResponse:
    return await _decide(request, True)


async def reject(request: Request) -> JSONResponse:
    return await _decide(request, False)


async def cancel(request: Request) -> JSONResponse:
    store = _allowed(request)
    action = await _action(request)
    execution_id = _execution_id(request)
    who = principal_of(request)
    answer, owner = await run_in_threadpool(store.cancel_job, execution_id, action.reason,
                                            scope_id=who.read_scope, actor=who.actor)
    pool = _pool(request)
    if owner is not None and pool is not None and pool.worker.owner == owner:
        pool.cancel(execution_id)
    return _accepted(answer)


async def rerun(request: Request) -> JSONResponse:
    store = _allowed(request)
    await _action(request)
    who = principal_of(request)
    answer = await run_in_threadpool(store.rerun_job, _execution_id(request),
                                     job_limits(request), "http",
                                     scope_id=who.read_scope, actor=who.actor)
    if answer["status"] == "queued" and _pool(request) is not None:
        _pool(request).wake()
    return _accepted(answer)


EXECUTION = "/api/executions/{execution_id}"
routes = [
    Route("/api/jobs", submit, methods=["POST"]),
    Route(EXECUTION + "/approve", approve, methods=["POST"]),
    Route(EXECUTION + "/reject", reject, methods=["POST"]),
    Route(EXECUTION + "/cancel", cancel, methods=["POST"]),
    Route(EXECUTION + "/rerun", rerun, methods=["POST"]),
]
