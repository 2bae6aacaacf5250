"""Errors the store raises; the API layer maps each ``code`` to an HTTP status."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """A request the store refuses, with a stable machine-readable code."""

    code = "store_error"

    def __init__(self, message: str, detail: dict[str, Any] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}
        if code:
            self.code = code


class NotFound(StoreError):
    code = "not_found"


class Conflict(StoreError):
    code = "conflict"


class Invalid(StoreError):
    """Valid JSON that the data makes impossible (a field path goes in ``detail``)."""

    code = "invalid_body"


class BadParameter(StoreError):
    """A query parameter that is unknown or cannot be parsed."""

    code = "bad_parameter"


def execution_not_found(execution_id: str) -> NotFound:
    return NotFound(f"no execution with id {execution_id!r}", {"execution_id": execution_id},
                    code="execution_not_found")
