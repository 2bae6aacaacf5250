"""OTLP attribute values as plain JSON-able Python values, with size bounds."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from app.limits.values import MAX_VALUE_BYTES, cut_value

MAX_LABELS = 32
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
MAX_META_KEYS = 64
MAX_STRING = 65_536
_MAX_DEPTH = 16


def clean(text: str, limit: int = MAX_STRING) -> str:
    """A string any database can store: NUL (which PostgreSQL refuses) and lone
    surrogates (not UTF-8; OTLP/JSON escapes can make them) replaced, and cut
    to ``limit`` so one huge value cannot bloat a row."""
    text = text[:limit]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def value_of(v: AnyValue, depth: int = 0) -> Any:
    """The Python value of an ``AnyValue`` (bytes as hex; nesting bounded)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return clean(v.string_value)
    if kind == "bytes_value":
        return v.bytes_value.hex()[:MAX_STRING]
    if kind == "array_value":
        if depth >= _MAX_DEPTH:
            return None
        return [value_of(x, depth + 1) for x in v.array_value.values]
    if kind == "kvlist_value":
        if depth >= _MAX_DEPTH:
            return None
        return {clean(kv.key): value_of(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "double_value":
        d = v.double_value
        # NaN and infinities are not JSON.
        return d if d == d and d not in (float("inf"), float("-inf")) else str(d)
    return getattr(v, kind)


def as_dict(attrs: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` as a dict (the last of a repeated key wins)."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in attrs:
        out[clean(kv.key)] = value_of(kv.value)
    return out


# One encoder for every call (json.dumps with arguments builds one each time).
_TEXT_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def as_text(value: Any) -> str:
    """A label's string form: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return _TEXT_ENCODER.encode(value)


def labels_of(attrs: dict[str, Any]) -> dict[str, str] | None:
    """At most ``MAX_LABELS`` string labels, keys and values truncated."""
    out: dict[str, str] = {}
    for key, value in attrs.items():
        if len(out) >= MAX_LABELS:
            break
        if key:
            out[key[:MAX_LABEL_KEY]] = as_text(value)[:MAX_LABEL_VALUE]
    return out or None


def bounded(attrs: dict[str, Any]) -> dict[str, Any]:
    """The first ``MAX_META_KEYS`` entries: a resource can carry hundreds."""
    return dict(list(attrs.items())[:MAX_META_KEYS])


def json_or_text(value: Any) -> Any:
    """A JSON-encoded attribute (tool arguments usually are) decoded, else as given."""
    if isinstance(value, str):
        stripped = value.strip()
        # Numbers too: "42" from a JSON encoder is the number 42.
        if stripped[:1] and stripped[:1] in '{["-0123456789tfn':
            if "\\u0000" in stripped or "\\ud" in stripped.lower():
                return value  # it would decode to what the database refuses
            try:
                return json.loads(stripped)
            except (ValueError, RecursionError):
                return value
    return value


# The compact JSON text of a value decoded from JSON text of n characters is at
# most 8n bytes: a character becomes at most 4 UTF-8 bytes, escapes only
# shrink, whitespace goes, and the worst number is a float written short that
# prints long ("1e15" → "1000000000000000.0"; a float token has at least 3
# characters and prints in at most 24).
_DECODED_GROWTH = 8


def stored_value(value: Any) -> Any:
    """An attribute as stored in a JSON column: decoded when it is JSON text
    (``json_or_text``), and cut as every recorded value is (``cut_value``)."""
    decoded = json_or_text(value)
    if isinstance(value, str) and len(value) * _DECODED_GROWTH + 2 <= MAX_VALUE_BYTES:
        # Most tool arguments and results are small: measuring them would mean
        # encoding each one once more just to find it under the limit.
        return decoded
    return cut_value(decoded)
