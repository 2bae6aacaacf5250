"""Decoding an OTLP/HTTP trace export body: gzip, protobuf or OTLP/JSON.

Uses the ``opentelemetry-proto`` generated classes; no hand-written parser.
OTLP/JSON differs from protobuf's canonical JSON in one way that matters:
trace and span ids are hex strings, not base64. They are rewritten to base64
before ``json_format`` reads the message.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class Undecodable(ValueError):
    """The body is not a trace export request in the encoding it claims."""


class TooLarge(ValueError):
    """The body, once decompressed, is over the size limit."""


def gunzip(raw: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body, stopping past ``max_bytes`` so a small "gzip bomb"
    never inflates into memory (``max_length`` bounds each step)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise Undecodable(f"the body is not gzip: {exc}") from None
    if len(out) > max_bytes:
        raise TooLarge(f"the decompressed body is over {max_bytes} bytes")
    if not inflater.eof:
        raise Undecodable("the gzip stream is truncated")
    return out


def _hex_to_b64(value: Any) -> Any:
    if not isinstance(value, str) or value == "":
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        raise Undecodable(f"an id is not hex: {value[:40]!r}") from None


_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _fix_ids(node: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        if key in node:
            node[key] = _hex_to_b64(node[key])


def _walk_json(doc: Any) -> None:
    """Rewrite the hex ids of spans and their links in place."""
    if not isinstance(doc, dict):
        raise Undecodable("the body is not a JSON object")
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
        for ss in (rs or {}).get("scopeSpans") or (rs or {}).get("scope_spans") or []:
            for span in (ss or {}).get("spans") or []:
                if not isinstance(span, dict):
                    continue
                _fix_ids(span)
                for link in span.get("links") or []:
                    if isinstance(link, dict):
                        _fix_ids(link)


def parse(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The export request in ``body`` (``Undecodable`` when it is not one)."""
    request = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise Undecodable(f"the body is not an ExportTraceServiceRequest: {exc}") from None
        return request
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Undecodable(f"the body is not JSON: {exc}") from None
    _walk_json(doc)
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, RecursionError, TypeError) as exc:
        raise Undecodable(f"the body is not an OTLP/JSON trace export: {exc}") from None
    return request
