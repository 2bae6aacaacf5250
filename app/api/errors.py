"""One error shape for every JSON route: ``{"error": {"code", "message", "detail"}}``."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from app.store.errors import STORAGE_EXCEPTIONS, StorageFailure, StoreError, storage_failure

log = logging.getLogger("runyard.api")

STATUS_BY_CODE = {
    "bad_parameter": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "execution_not_found": 404,
    "tool_call_not_found": 404,
    "interaction_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_transition": 409,
    "already_exists": 409,
    "not_awaiting_approval": 409,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_body": 422,
    "internal_error": 500,
    "unavailable": 503,
    "storage_unavailable": 503,
    "storage_full": 503,
    "storage_read_only": 503,
    "overloaded": 503,
}


class ApiError(Exception):
    """An error raised by a route with its code, message and detail."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail or {}


class _ErrorJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        # ASCII with escapes: an error may echo a key or id from the request, and a
        # lone surrogate in it cannot be encoded as UTF-8 (JSONResponse's choice).
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


def error_response(code: str, message: str, detail: dict[str, Any] | None = None,
                   status: int | None = None) -> JSONResponse:
    """The JSON error response for ``code``."""
    return _ErrorJSON(
        {"error": {"code": code, "message": message, "detail": detail or {}}},
        status_code=status or STATUS_BY_CODE.get(code, 400),
    )


def validation_error(exc: ValidationError) -> ApiError:
    """A pydantic error as ``invalid_body`` naming the first failing field's path."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    path = [p for p in first["loc"]]
    where = ".".join(str(p) for p in path) or "body"
    return ApiError("invalid_body", f"{where}: {first['msg']}",
                    {"path": path, "errors": [{"path": list(e["loc"]), "message": e["msg"]}
                                              for e in errors[:20]]})


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.code, exc.message, exc.detail)


async def _store_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreError)
    return error_response(exc.code, exc.message, exc.detail)


def storage_response(failure: StorageFailure) -> JSONResponse:
    """The JSON 503 for a failing database, with a ``Retry-After`` hint."""
    response = error_response(failure.code, failure.message, failure.detail, status=503)
    response.headers["Retry-After"] = str(failure.retry_after_s)
    return response


# Paths whose errors are JSON; every other path is the page's, answered in HTML.
JSON_PREFIXES = ("/api/", "/v1/", "/healthz")


def refusal(scope: Scope, code: str, message: str, detail: dict[str, Any], *, status: int,
            retry_after_s: int, page_message: str | None = None) -> Response:
    """A request turned away for now (a failing database, a busy server, the
    request rate), with ``Retry-After``: on the page's paths the page's own
    error (``app.state.page_error``, wired by the app factory, so this layer
    needs no web import), which shows ``page_message`` (default ``message``)
    after its title; on the API's, the JSON error."""
    # Starlette puts the app in the scope; a bare middleware stack (tests) has none.
    page_error = getattr(getattr(scope.get("app"), "state", None), "page_error", None)
    if page_error is not None and not scope["path"].startswith(JSON_PREFIXES):
        page: Response = page_error(Request(scope), code, page_message or message,
                                    status=status, retry_after_s=retry_after_s)
        return page
    response = error_response(code, message, detail, status=status)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


async def _storage_error(request: Request, exc: Exception) -> Response:
    failure = storage_failure(exc)
    if failure is None:         # a failing query, not a failing database: a bug
        return await _unexpected(request, exc)
    # One line, no traceback: during an outage every request fails the same way.
    cause = getattr(exc, "orig", None) or exc
    log.warning("%s %s: %s (%s: %s)", request.method, request.url.path, failure.code,
                type(cause).__name__, (str(cause).strip().splitlines() or [""])[0])
    return refusal(request.scope, failure.code, failure.message, failure.detail, status=503,
                   retry_after_s=failure.retry_after_s)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return error_response(code, str(exc.detail), status=exc.status_code)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client hung up while its body was read: nobody reads an answer, and
    # logging a traceback per hang-up would cost most when the server is busiest.
    log.debug("%s %s: the client disconnected", request.method, request.url.path)
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("internal_error", "internal error; the server log has the details")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    StoreError: _store_error,
    HTTPException: _http_error,
    ClientDisconnect: _client_gone,
    **{cls: _storage_error for cls in STORAGE_EXCEPTIONS},
    Exception: _unexpected,
}
