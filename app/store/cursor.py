"""Signed keyset cursors: the sort, the last row's sort value and its id.

A cursor is ``PAYLOAD.SIGNATURE``: base64url of a small JSON array
``[sort, value, id]``, then base64url of an HMAC-SHA256 (the store's
``cursor_key``) over the payload *and* the reader's scope and sort. The query
that uses a cursor still applies every filter (scope included), so a cursor
never grants anything; the signature makes it opaque as well: a changed
cursor, one made for another scope or sort, or one from another server (or
before a restart, while the key is per process) is a 400 ``bad_parameter``
naming ``cursor`` instead of a position the client picked.

Divergence from "just base64": the signature is checked before the payload is
trusted, with ``hmac.compare_digest``. Only when it fails is the payload read,
to say "made for another sort" (the one mistake a well-behaved client makes);
that reading is bounded and never reaches the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from app.store.errors import BadParameter

SORTS = ("created_at:desc", "created_at:asc", "duration_ms:desc", "duration_ms:asc")
# A real cursor is under 300 characters (ids are at most 128 ASCII characters).
MAX_CURSOR_CHARS = 2048
_VERSION = "runyard-cursor/1"
_NOT_OURS = "cursor: not a cursor from next_cursor of this list"


def _storable(text: str) -> bool:
    """False for text no stored id can hold: a NUL (PostgreSQL text refuses it) or a
    lone surrogate (JSON escapes can make one; no database can encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))


def _signature(key: bytes, scope_id: str | None, sort: str, payload: bytes) -> bytes:
    # The context is JSON (unambiguous, and free of raw newlines), so no choice of
    # scope or sort can make two different contexts sign the same bytes.
    context = json.dumps([_VERSION, scope_id, sort]).encode()
    return hmac.new(key, context + b"\n" + payload, hashlib.sha256).digest()


def _bad(message: str = _NOT_OURS) -> BadParameter:
    return BadParameter(message, {"parameter": "cursor"})


def _valid(data: Any) -> bool:
    return (
        isinstance(data, list) and len(data) == 3 and data[0] in SORTS
        and (data[1] is None or (type(data[1]) is int and 0 <= data[1] < 2**63))
        and isinstance(data[2], str) and len(data[2]) <= 128 and _storable(data[2])
        and (data[1] is not None or data[0].startswith("duration_ms"))
    )


@dataclass(frozen=True)
class Cursor:
    sort: str
    value: int | None
    id: str

    def encode(self, key: bytes, scope_id: str | None) -> str:
        """The cursor as handed out in ``next_cursor``, for a reader of ``scope_id``."""
        payload = json.dumps([self.sort, self.value, self.id], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(_signature(key, scope_id, self.sort, payload))}"

    @classmethod
    def decode(cls, text: str, key: bytes, scope_id: str | None, sort: str) -> Cursor:
        """Verify and parse a cursor for a reader of ``scope_id`` listing by ``sort``;
        anything else is a ``bad_parameter`` naming ``cursor``."""
        if len(text) > MAX_CURSOR_CHARS or text.count(".") != 1:
            raise _bad()
        head, _, tail = text.partition(".")
        try:
            payload, given = _unb64(head), _unb64(tail)
        except (ValueError, UnicodeError, binascii.Error):
            raise _bad() from None
        # The decoder skips stray characters and ignores a last character's
        # spare bits: only the one canonical spelling is ours.
        if _b64(payload) != head or _b64(given) != tail:
            raise _bad()
        if hmac.compare_digest(given, _signature(key, scope_id, sort, payload)):
            data = _parsed(payload)
            # Signed by us for this sort, so this holds unless the key leaked.
            if not _valid(data) or data[0] != sort:
                raise _bad()
            return cls(data[0], data[1], data[2])
        data = _parsed(payload)
        if (_valid(data) and data[0] != sort and hmac.compare_digest(
                given, _signature(key, scope_id, data[0], payload))):
            raise _bad(f"cursor: made for sort={data[0]}, not sort={sort}; "
                       "start again without a cursor")
        raise _bad()


def _parsed(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeError, RecursionError):
        return None
