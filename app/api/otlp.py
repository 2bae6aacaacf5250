"""``POST /v1/traces``: OTLP/HTTP trace export, protobuf or JSON, gzip or not.

Answers as the OTLP/HTTP specification asks, which differs from the rest of
the API on purpose: success is an ``ExportTraceServiceResponse`` and a bad
body a ``google.rpc.Status``, each in the request's own encoding, so stock
exporters understand them. A wrong content type cannot be answered in "the
request's encoding", so 415 uses the API's usual JSON error shape, as does the
413 of ``BodyLimitMiddleware`` (it answers before the route runs).

Spans land in the principal's ``write_scope``; concurrent requests are
written together (``app.otlp.writer``). A trace id is global, so a
trace already recorded in another scope is not written to: its spans are
reported as rejected (``partial_success``), with a reason that names no run.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.errors import error_response
from app.auth.principal import principal_of
from app.otlp import decode
from app.otlp.mapping import Mapped, map_request
from app.store.errors import STORAGE_EXCEPTIONS, storage_failure

_CODE_INVALID_ARGUMENT = 3
_CODE_RESOURCE_EXHAUSTED = 8
_CODE_UNAVAILABLE = 14


def _encoded(message: Message, content_type: str, status: int) -> Response:
    if content_type == decode.PROTOBUF:
        return Response(message.SerializeToString(), status, media_type=decode.PROTOBUF)
    body = json_format.MessageToJson(message, indent=None)
    return Response(body, status, media_type=decode.JSON)


def _status(content_type: str, http_status: int, code: int, message: str) -> Response:
    return _encoded(Status(code=code, message=message), content_type, http_status)


def unavailable(content_type: str, message: str, retry_after_s: int) -> Response:
    """OTLP/HTTP's retryable 503: a ``google.rpc.Status`` (UNAVAILABLE) in the
    request's encoding (JSON unless it was protobuf), with ``Retry-After``,
    by which exporters back off."""
    encoding = content_type.split(";")[0].strip().lower()
    response = _status(decode.PROTOBUF if encoding == decode.PROTOBUF else decode.JSON, 503,
                       _CODE_UNAVAILABLE, message)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def _decode_and_map(body: bytes, content_type: str) -> Mapped:
    return map_request(decode.parse(body, content_type))


async def export_traces(request: Request) -> Response:
    """Decode, map and store one export request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (decode.PROTOBUF, decode.JSON):
        return error_response(
            "unsupported_media_type",
            f"OTLP traces are {decode.PROTOBUF} or {decode.JSON}, not {content_type or 'none'}",
            {"accepted": [decode.PROTOBUF, decode.JSON]})
    limit = request.app.state.settings.max_body_bytes
    body = await request.body()
    try:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            body = decode.gunzip(body, limit)
        elif encoding not in ("", "identity"):
            raise decode.Undecodable(f"unsupported Content-Encoding {encoding!r}")
        # Decoding and mapping are CPU work on up to 10 MB: off the event loop.
        mapped = await run_in_threadpool(_decode_and_map, body, content_type)
    except decode.TooLarge as exc:
        return _status(content_type, 413, _CODE_RESOURCE_EXHAUSTED, str(exc))
    except decode.Undecodable as exc:
        return _status(content_type, 400, _CODE_INVALID_ARGUMENT, str(exc)[:500])
    foreign = 0
    if mapped.traces:
        try:
            foreign = await request.app.state.otlp_writer.write(mapped.traces,
                                                   principal_of(request).write_scope)
        except STORAGE_EXCEPTIONS as exc:
            if (failure := storage_failure(exc)) is None:
                raise
            return unavailable(content_type, failure.message, failure.retry_after_s)
    answer = ExportTraceServiceResponse()
    reasons = [mapped.reason] if mapped.rejected else []
    if foreign:
        reasons.append(f"{foreign} span(s) of a trace id this token may not write to")
    if mapped.rejected or foreign:
        answer.partial_success.rejected_spans = mapped.rejected + foreign
        answer.partial_success.error_message = "; ".join(reasons)
    return _encoded(answer, content_type, 200)


routes = [Route("/v1/traces", export_traces, methods=["POST"])]
