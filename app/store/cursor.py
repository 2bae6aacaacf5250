"""Opaque keyset cursors: the sort, the last row's sort value and its id.

A cursor is base64url of a small JSON array. It carries no authority: the
query that uses it still applies every filter (scope included), so a forged
cursor can only move the position, and a malformed one is a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from app.store.errors import BadParameter

SORTS = ("created_at:desc", "created_at:asc", "duration_ms:desc", "duration_ms:asc")


def _storable(text: str) -> bool:
    """False for text no stored id can hold: a NUL (PostgreSQL text refuses it) or a
    lone surrogate (JSON escapes can make one; no database can encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@dataclass(frozen=True)
class Cursor:
    sort: str
    value: int | None
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.sort, self.value, self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: str) -> Cursor:
        """Parse a cursor made for ``sort``; anything else is a ``bad_parameter``."""
        try:
            padded = text + "=" * (-len(text) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        except (ValueError, UnicodeError, binascii.Error, RecursionError):
            raise BadParameter("cursor: not a cursor from next_cursor",
                               {"parameter": "cursor"}) from None
        ok = (
            isinstance(data, list) and len(data) == 3 and data[0] in SORTS
            and (data[1] is None or (type(data[1]) is int and 0 <= data[1] < 2**63))
            and isinstance(data[2], str) and len(data[2]) <= 128 and _storable(data[2])
            and (data[1] is not None or data[0].startswith("duration_ms"))
        )
        if not ok:
            raise BadParameter("cursor: not a cursor from next_cursor",
                               {"parameter": "cursor"})
        if data[0] != sort:
            raise BadParameter(f"cursor: made for sort={data[0]}, not sort={sort}",
                               {"parameter": "cursor"})
        return cls(data[0], data[1], data[2])
