"""Request bodies: size-limited, strict JSON, validated into the store's input models."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, error_response, validation_error

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


# Deeper than any real record needs, and far below the recursion limits of the
# JSON encoders and decoders (ours, the drivers', the templates') that every
# stored value passes through again on each read: a value that nests near them
# could be written once and then break every page that lists it.
MAX_DEPTH = 64
_BAD_STRING = "strings may not contain NUL characters or lone surrogates"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    # 1e400 is JSON but parses to inf, which neither PostgreSQL nor a JSON
    # response can hold.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _unstorable(text: str) -> bool:
    """True for a string databases cannot store: a NUL character, or a lone
    UTF-16 surrogate that is not UTF-8."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _problem(value: Any, check_strings: bool) -> tuple[str, dict[str, Any]] | None:
    """The first reason ``value`` cannot be stored and the path where it is:
    nesting deeper than ``MAX_DEPTH``, or (with ``check_strings``) an unstorable
    string, key or value. Iterative, so it cannot itself run out of stack."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if check_strings and _unstorable(node):
                return _BAD_STRING, {"path": list(path)}
            continue
        if isinstance(node, dict):
            children = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            continue
        if len(path) >= MAX_DEPTH:
            return (f"the body is nested deeper than {MAX_DEPTH} levels",
                    {"path": list(path), "max_depth": MAX_DEPTH})
        for key, _ in children:
            if check_strings and isinstance(key, str) and _unstorable(key):
                return _BAD_STRING, {"path": [*path, key]}
        # Reversed, so the first problem in document order is the one reported.
        stack.extend((child, (*path, key)) for key, child in reversed(children))
    return None


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body strictly or raise ``invalid_json`` saying why; a value
    that cannot be stored (too deep, NUL, lone surrogate) is ``invalid_body``."""
    try:
        # Strict UTF-8 (as RFC 8259 asks), not json.loads(bytes): that guesses
        # UTF-16/32 and decodes with "surrogatepass", letting an encoded lone
        # surrogate in unescaped, past the check below.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError("invalid_json", f"the body is not UTF-8 JSON: {exc}") from None
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except RecursionError:
        raise ApiError("invalid_json", "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError("invalid_json", f"the body is not JSON: {exc}") from None
    lowered = text.lower()
    check_strings = "\\u0000" in lowered or "\\ud" in lowered
    # Nesting cannot be deeper than the number of brackets: most bodies skip the walk.
    if check_strings or text.count("[") + text.count("{") > MAX_DEPTH:
        problem = _problem(value, check_strings)
        if problem is not None:
            raise ApiError("invalid_body", *problem)
    return value


async def read_model(request: Request, model: type[M]) -> M:
    """The request body validated as ``model`` (400 not JSON, 422 wrong shape)."""
    return await read_checked(request, model.model_validate)


async def read_checked(request: Request, check: Callable[[object], T]) -> T:
    """The request body passed through ``check``, a pydantic validation
    (400 not JSON, 422 wrong shape)."""
    value = parse_json(await request.body())
    try:
        return check(value)
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
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > self.max_bytes:
                    # Built only when needed: ~6 µs, on every request otherwise.
                    too_large = error_response(
                        "body_too_large", f"the request body is over {self.max_bytes} bytes",
                        {"max_bytes": self.max_bytes})
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
