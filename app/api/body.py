"""Request bodies: size-limited, strict JSON, validated into the store's input models."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, error_response, validation_error

M = TypeVar("M", bound=BaseModel)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _bad_string_path(value: Any, path: list[Any]) -> list[Any] | None:
    """The path of the first string (key or value) that databases cannot store:
    a NUL character, or a lone UTF-16 surrogate that is not UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _bad_string_path(k, [*path, k]) or _bad_string_path(v, [*path, k])
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _bad_string_path(v, [*path, i])
            if found is not None:
                return found
    return None


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body strictly or raise ``invalid_json`` saying why."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise ApiError("invalid_json", "the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("invalid_json", f"the body is not JSON: {exc}") from None
    lowered = raw.lower()
    if b"\\u0000" in lowered or b"\\ud" in lowered:
        path = _bad_string_path(value, [])
        if path is not None:
            raise ApiError("invalid_body",
                           "strings may not contain NUL characters or lone surrogates",
                           {"path": path})
    return value


async def read_model(request: Request, model: type[M]) -> M:
    """The request body validated as ``model`` (400 not JSON, 422 wrong shape)."""
    value = parse_json(await request.body())
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except RecursionError:
        raise ApiError("invalid_body", "the body is nested too deeply") from None


class BodyLimitMiddleware:
    """Answers 413 ``body_too_large`` once a request body passes ``max_bytes``.

    Checks ``Content-Length`` up front and counts streamed chunks too, since a
    chunked upload has no length to check.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = error_response(
            "body_too_large", f"the request body is over {self.max_bytes} bytes",
            {"max_bytes": self.max_bytes})
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > self.max_bytes:
                    await too_large(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the route's body read, so the app's ApiError
                    # handler answers it like any other error.
                    raise ApiError("body_too_large",
                                   f"the request body is over {self.max_bytes} bytes",
                                   {"max_bytes": self.max_bytes})
            return message

        await self.app(scope, limited_receive, send)
