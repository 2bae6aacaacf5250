"""Record runs into Runyard from Python, through OpenTelemetry (issue 6).

    from app import recorder
    recorder.configure(endpoint="http://127.0.0.1:8000")
    with recorder.execution("nightly-sync", trigger="cli") as run:
        with run.tool_call("github.issues.list", args={"repo": "x/y"}) as call:
            call.result = fetch()

Built on the OpenTelemetry SDK: a ``TracerProvider`` of its own (the host
program's global provider, if any, is left alone), a ``BatchSpanProcessor``
and the OTLP/HTTP span exporter. Spans are exported in the background, so a
Runyard that is down or slow never blocks or raises into the host program: the
exporter gives up after ``timeout`` seconds and the spans it could not send are
counted (:func:`dropped_spans`). Context travels in ``contextvars``, so it
works in threads and asyncio tasks alike.

Intentional divergence: the configured recorder is module state, like the
``logging`` module's, because recording must be reachable from any function of
the host program without passing an object around.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

F = TypeVar("F", bound=Callable[..., Any])


class _Counting(SpanExporter):
    """The OTLP exporter, counting the spans it failed to deliver."""

    def __init__(self, inner: OTLPSpanExporter) -> None:
        self.inner = inner
        self.dropped = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # the host program must never see an exporter error
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            with self._lock:
                self.dropped += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Recorder:
    """A configured provider, its tracer and its exporter's drop count."""

    def __init__(self, endpoint: str, service_name: str, timeout: float,
                 delay_ms: int, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.exporter = _Counting(OTLPSpanExporter(
            endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=timeout, headers=headers))
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False)
        self.provider.add_span_processor(
            BatchSpanProcessor(self.exporter, schedule_delay_millis=delay_ms))
        self.tracer = self.provider.get_tracer("runyard.recorder")


_current: Recorder | None = None
_exit_hook = False


def configure(endpoint: str = "http://127.0.0.1:8000", *, service_name: str = "python",
              timeout: float = 5.0, delay_ms: int = 500,
              token: str | None = None) -> Recorder:
    """Send recorded runs to the Runyard at ``endpoint`` (replacing any earlier setup).

    ``token`` (default ``$RUNYARD_TOKEN``) is a token with the ``write`` role,
    sent as ``Authorization: Bearer``; a server without tokens needs none."""
    global _current, _exit_hook
    if _current is not None:
        shutdown()
    token = token if token is not None else os.environ.get("RUNYARD_TOKEN") or None
    _current = Recorder(endpoint, service_name, timeout, delay_ms, token)
    if not _exit_hook:
        # Send what is still buffered when the program ends (at most ``timeout``
        # seconds when Runyard is down), so the three-line use loses nothing.
        atexit.register(shutdown)
        _exit_hook = True
    return _current


def _recorder() -> Recorder:
    return _current if _current is not None else configure()


def flush(timeout_s: float = 10.0) -> bool:
    """Export what is buffered now; False when it did not finish in time."""
    return _current is None or _current.provider.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Flush and stop the exporter (call before exit; idempotent)."""
    global _current
    if _current is not None:
        _current.provider.shutdown()
        _current = None


def dropped_spans() -> int:
    """How many spans could not be delivered (Runyard down, refused, too slow)."""
    return _current.exporter.dropped if _current is not None else 0


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def _fail(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class ToolCall:
    """An open tool call: set ``result`` (or ``error``) before the block ends."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.result: Any = None
        self.error: str | None = None


class Run:
    """An open execution: start tool calls and log lines inside it."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.trace_id = format(span.get_span_context().trace_id, "032x")
        self.execution_id = f"otel-{self.trace_id}"

    @contextmanager
    def tool_call(self, tool_path: str, args: Any = None) -> Iterator[ToolCall]:
        """Record a tool call; nested calls nest (the current span is the parent)."""
        with _span(tool_path, {"runyard.tool": tool_path,
                               "gen_ai.tool.call.arguments": _json(args)}) as span:
            call = ToolCall(span)
            yield call
            span.set_attribute("gen_ai.tool.call.result", _json(call.result))
            if call.error:
                span.set_status(Status(StatusCode.ERROR, call.error))

    def log(self, message: str, level: str = "info") -> None:
        """A log line of the run (an event on the current span)."""
        trace.get_current_span().add_event(message, {"runyard.level": level})


@contextmanager
def _span(name: str, attributes: dict[str, Any]) -> Iterator[trace.Span]:
    with _recorder().tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False,
            set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            _fail(span, exc)
            raise


@contextmanager
def execution(name: str, trigger: str = "python", code: str | None = None,
              **labels: str) -> Iterator[Run]:
    """Record one execution; an exception escaping the block fails it (and propagates)."""
    attributes: dict[str, Any] = {"runyard.trigger": trigger, **labels}
    if code is not None:
        attributes["runyard.code"] = code
    # A new trace even inside another span: each execution is its own run.
    with _recorder().tracer.start_as_current_span(
            name, context=trace.set_span_in_context(trace.INVALID_SPAN),
            attributes=attributes, record_exception=False,
            set_status_on_exception=False) as span:
        try:
            yield Run(span)
        except BaseException as exc:
            _fail(span, exc)
            raise


def tool(func: F | None = None, *, name: str | None = None) -> Any:
    """Record each call of a function (sync or async) as a tool call."""

    def wrap(fn: F) -> F:
        path = name or f"{fn.__module__}.{fn.__qualname__}"
        signature = inspect.signature(fn)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            try:
                return dict(signature.bind_partial(*args, **kwargs).arguments)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with Run(trace.get_current_span()).tool_call(
                        path, arguments(args, kwargs)) as call:
                    call.result = await fn(*args, **kwargs)
                    return call.result
            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with Run(trace.get_current_span()).tool_call(path, arguments(args, kwargs)) as call:
                call.result = fn(*args, **kwargs)
                return call.result
        return run_sync  # type: ignore[return-value]

    return wrap(func) if func is not None else wrap
