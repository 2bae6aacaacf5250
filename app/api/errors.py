"""One error shape for every JSON route: ``{"error": {"code", "message", "detail"}}``."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.store.errors import StoreError

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


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return error_response(code, str(exc.detail), status=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("internal_error", "internal error; the server log has the details")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    StoreError: _store_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
