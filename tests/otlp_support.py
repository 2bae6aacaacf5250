"""Building real OpenTelemetry SDK spans for the OTLP tests."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode


def nested_trace(calls: int = 20) -> tuple[list[ReadableSpan], str]:
    """One root and ``calls`` tool-call spans (every 5th nested in the previous,
    every 7th failed with an exception event); spans in end order, and the trace id."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test.scope")
    with tracer.start_as_current_span("nightly-sync", attributes={
            "runyard.trigger": "cli", "team": "infra", "code.function": "sync.main"}) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        for i in range(calls):
            with tracer.start_as_current_span(f"step-{i}", attributes={
                    "gen_ai.tool.name": f"github.issues.n{i}",
                    "gen_ai.tool.call.arguments": f'{{"page": {i}}}'}) as span:
                if i % 5 == 4:
                    with tracer.start_as_current_span("inner", attributes={
                            "runyard.tool": f"fs.read.{i}", "input.value": "x"}):
                        pass
                if i % 7 == 6:
                    try:
                        raise ValueError(f"bad page {i}")
                    except ValueError as exc:
                        span.record_exception(exc)
                        span.set_status(Status(StatusCode.ERROR, f"bad page {i}"))
                else:
                    span.set_attribute("gen_ai.tool.call.result", f'{{"items": {i}}}')
    provider.shutdown()
    return list(memory.get_finished_spans()), trace_id


def _hex_ids(node: object) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, object]:
    """The OTLP/JSON body of ``spans``: the SDK's encoder, then hex ids as the spec says."""
    doc = json_format.MessageToDict(encode_spans(spans))
    _hex_ids(doc)
    return doc
