"""Oversized JSON values are stored cut, with a marker that says so.

A recorded value (an execution's ``result`` or ``trigger_meta``, a tool call's
``args`` or ``result``, an event's ``data``, an interaction's ``request`` or
``response``) whose JSON text is over ``MAX_VALUE_BYTES`` is replaced by::

    {"runyard_truncated": true, "bytes": <size of the JSON text>,
     "preview": "<its first 4 KB>"}

Cut, not rejected: a program that records a huge tool result has usually
finished the work, and refusing the write would lose the run's record (and
many clients do not retry a 422). Never silently: the marker is what the API
returns, and the page shows "cut: N bytes, first 4 KB shown".

Every write path shares ``cut_value``: the pydantic input models run it as an
``AfterValidator`` (API, ingest, the runner), and the OTLP mapping calls it on
the values it builds from span attributes.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any

MAX_VALUE_BYTES = 256 * 1024
PREVIEW_BYTES = 4 * 1024
MARKER_KEY = "runyard_truncated"
# The longest JSON text one character can become (a control character as
# "\\u001f"): a string shorter than this bound cannot be over the limit.
_MAX_CHAR_BYTES = 6
# One encoder for every call: json.dumps with non-default arguments builds a
# new one each time, which is most of the cost for the small values most are.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# json.dumps(value) with default arguments, the text SQLAlchemy's JSON type
# stores, but without building a new C encoder per call: that is two thirds of
# the cost for the small values most are, and a bulk import encodes millions.
# No circular-reference check (``markers`` None): values come from parsed JSON,
# and a cycle still ends in RecursionError rather than a crash.
_STORED = (None if c_make_encoder is None else c_make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ",
    False, False, True))


def json_size(value: Any) -> tuple[int, bytes]:
    """The size in bytes of ``value``'s compact UTF-8 JSON text, and the text."""
    text = _ENCODER.encode(value)
    # surrogatepass: a lone surrogate (refused earlier on the API path) must not
    # turn a size check into a crash.
    encoded = text.encode("utf-8", "surrogatepass")
    return len(encoded), encoded


def cut_value(value: Any) -> Any:
    """``value`` as given, or the truncation marker when its JSON text is over
    ``MAX_VALUE_BYTES``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    # Most values are small: skip encoding what cannot be over the limit.
    if isinstance(value, str) and len(value) * _MAX_CHAR_BYTES + 2 <= MAX_VALUE_BYTES:
        return value
    size, encoded = json_size(value)
    if size <= MAX_VALUE_BYTES:
        return value
    # "ignore" drops a character split by the cut, so the preview is valid text.
    preview = encoded[:PREVIEW_BYTES].decode("utf-8", "ignore")
    return {MARKER_KEY: True, "bytes": size, "preview": preview}


def is_cut(value: Any) -> bool:
    """True when ``value`` is a truncation marker."""
    return (isinstance(value, dict) and value.get(MARKER_KEY) is True
            and isinstance(value.get("bytes"), int) and isinstance(value.get("preview"), str))


def stored_json(value: Any) -> str | None:
    """The JSON text a JSON column stores for ``value`` (None for SQL NULL), cut
    as ``cut_value`` cuts.

    ``json.dumps``'s default text (ASCII escapes, a space after separators) is
    never shorter than the compact UTF-8 text ``cut_value`` measures, so a text
    within the limit needs no second look.
    """
    if value is None:
        return None
    text = json.dumps(value) if _STORED is None else "".join(_STORED(value, 0))
    if len(text) > MAX_VALUE_BYTES:
        text = json.dumps(cut_value(value))
    return text
