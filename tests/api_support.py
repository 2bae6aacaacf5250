"""Assertions shared by the API tests."""

from __future__ import annotations

from typing import Any

from httpx2 import Response


def error_of(r: Response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` object of a response, after checking its status, code and shape."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "detail"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["detail"], dict)
    return error
