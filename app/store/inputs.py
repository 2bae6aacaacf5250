"""The shapes of what may be written, validated with pydantic.

The API validates request bodies against these and the runner builds them in
code; both reach the store already checked, so the store only enforces rules
that need the database (existence, transitions).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)
from typing_extensions import TypedDict

from app.limits.values import MAX_VALUE_BYTES, cut_value
from app.times import parse_time

STATUSES = (
    "pending", "queued", "running", "waiting_for_interaction",
    "completed", "failed", "cancelled", "timed_out",
)
TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out"})
LEVELS = ("debug", "info", "warn", "error")
CHANGE_EVENT_TYPES = (
    "execution.created", "execution.status", "execution.updated", "execution.progress",
    "tool_call.started", "tool_call.finished", "interaction.requested", "interaction.resolved",
)
RECORD_EVENT_TYPES = ("log", "stdout", "stderr", "artifact")
EVENT_TYPES = CHANGE_EVENT_TYPES + RECORD_EVENT_TYPES

MAX_MESSAGE_BYTES = 64 * 1024
MAX_EVENTS_PER_APPEND = 1000
MAX_EXECUTIONS_PER_INGEST = 1000
MAX_LABELS = 64

Status = Literal[
    "pending", "queued", "running", "waiting_for_interaction",
    "completed", "failed", "cancelled", "timed_out",
]
Level = Literal["debug", "info", "warn", "error"]
Time = Annotated[int, BeforeValidator(parse_time)]


def _check_message(value: str | None) -> str | None:
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise ValueError(f"longer than {MAX_MESSAGE_BYTES} bytes")
    return value


def _check_labels(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    return value


Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@\-]*$")]
Message = Annotated[str, AfterValidator(_check_message)]
LabelKey = Annotated[str, Field(min_length=1, max_length=128)]
LabelValue = Annotated[str, Field(max_length=1024)]
Labels = Annotated[dict[LabelKey, LabelValue], AfterValidator(_check_labels)]
LabelsPatch = Annotated[dict[LabelKey, LabelValue | None], AfterValidator(_check_labels)]
ToolPath = Annotated[str, Field(min_length=1, max_length=512)]
Text = Annotated[str, Field(max_length=1_000_000)]
# Every recorded JSON value: one whose JSON text is over MAX_VALUE_BYTES is
# stored as a truncation marker (app.limits.values), never refused.
_CUT = AfterValidator(cut_value)
JsonValue = Annotated[Any, _CUT, Field(
    description=f"any JSON value; one whose JSON text is over {MAX_VALUE_BYTES} bytes is "
                "stored as {\"runyard_truncated\": true, \"bytes\": n, \"preview\": "
                "\"<first 4 KB>\"}")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class ExecutionCreate(_In):
    id: Id | None = None
    name: Annotated[str, Field(max_length=1024)] | None = None
    status: Status = "running"
    trigger_kind: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    trigger_meta: JsonValue = None
    code: Text | None = None
    result: JsonValue = None
    error: Text | None = None
    exit_code: int | None = Field(None, ge=-(2**31), lt=2**31)
    progress_pct: float | None = Field(None, ge=0, le=100)
    progress_stage: Annotated[str, Field(max_length=256)] | None = None
    labels: Labels | None = None
    created_at: Time | None = None
    started_at: Time | None = None
    completed_at: Time | None = None
    rerun_of: Id | None = None


class ExecutionPatch(_In):
    name: Annotated[str, Field(max_length=1024)] | None = None
    status: Status | None = None
    result: JsonValue = None
    error: Text | None = None
    exit_code: int | None = Field(None, ge=-(2**31), lt=2**31)
    progress_pct: float | None = Field(None, ge=0, le=100)
    progress_stage: Annotated[str, Field(max_length=256)] | None = None
    labels: LabelsPatch | None = None
    started_at: Time | None = None
    completed_at: Time | None = None


class ToolCallStart(_In):
    id: Id | None = None
    tool_path: ToolPath
    parent_id: Id | None = None
    status: Literal["running", "completed", "failed"] = "running"
    args: JsonValue = None
    result: JsonValue = None
    error: Text | None = None
    started_at: Time | None = None
    completed_at: Time | None = None


class ToolCallFinish(_In):
    status: Literal["completed", "failed"] = "completed"
    result: JsonValue = None
    error: Text | None = None
    completed_at: Time | None = None


class InteractionAsk(_In):
    id: Id | None = None
    kind: Literal["elicitation", "approval"] = "elicitation"
    message: Message | None = None
    request: JsonValue = None
    created_at: Time | None = None


class InteractionResolve(_In):
    action: Literal["accept", "decline", "cancel"]
    response: JsonValue = None


class EventIn(_In):
    ts: Time | None = None
    level: Level = "info"
    type: Literal["log", "stdout", "stderr", "artifact"] = "log"
    message: Message | None = None
    data: JsonValue = None


class EventsAppend(_In):
    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_EVENTS_PER_APPEND)]


class IngestToolCall(ToolCallStart):
    status: Literal["running", "completed", "failed"] | None = None  # type: ignore[assignment]


class IngestInteraction(InteractionAsk):
    status: Literal["pending", "resolved", "cancelled"] = "pending"
    action: Literal["accept", "decline", "cancel"] | None = None
    response: JsonValue = None
    resolved_at: Time | None = None


class IngestEvent(EventIn):
    type: Literal[EVENT_TYPES] = "log"  # type: ignore[valid-type]


class IngestExecution(ExecutionCreate):
    tool_calls: Annotated[list[IngestToolCall], Field(max_length=100_000)] = []
    interactions: Annotated[list[IngestInteraction], Field(max_length=10_000)] = []
    events: Annotated[list[IngestEvent], Field(max_length=100_000)] = []


class IngestBatch(_In):
    executions: Annotated[list[IngestExecution], Field(max_length=MAX_EXECUTIONS_PER_INGEST)]


# -- the bulk path: the same shapes checked as dicts ---------------------------
#
# Pydantic builds a model instance for every nested object, which is three
# quarters of the cost of checking an ingest body (a thousand runs carry ten
# thousand objects). The ingest route and the store's bulk path use TypedDicts
# derived from the models above instead: the same fields, types, limits and
# error locations, one schema to keep. Two differences, both handled in
# ``app/store/ingest.py``: absent fields stay absent (``INGEST_DEFAULTS`` has
# the models' defaults), and JSON values are cut while the store encodes them
# for writing, so each is encoded once rather than twice.


def _as_dict_shape(model: type[BaseModel], **items: Any) -> Any:
    """A TypedDict with ``model``'s fields; ``items`` gives, for fields that are
    lists of other models, the dict shape of their items (the field's own
    limits, such as its length, are kept)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kept = [m for m in info.metadata if m is not _CUT]
        base = list[items[name]] if name in items else info.annotation
        annotation = Annotated[(base, *kept)] if kept else base  # type: ignore[valid-type]
        fields[name] = annotation if info.is_required() else NotRequired[annotation]
    shape = TypedDict(model.__name__ + "Data", fields)  # type: ignore[operator]
    shape.__pydantic_config__ = ConfigDict(extra="forbid", strict=False)  # type: ignore[attr-defined]
    return shape


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    return {name: info.get_default(call_default_factory=True)
            for name, info in model.model_fields.items() if not info.is_required()}


_ToolCallData = _as_dict_shape(IngestToolCall)
_InteractionData = _as_dict_shape(IngestInteraction)
_EventData = _as_dict_shape(IngestEvent)
_ExecutionData = _as_dict_shape(IngestExecution, tool_calls=_ToolCallData,
                                interactions=_InteractionData, events=_EventData)
IngestData = _as_dict_shape(IngestBatch, executions=_ExecutionData)
_INGEST = TypeAdapter(IngestData)
INGEST_DEFAULTS: dict[str, dict[str, Any]] = {
    "execution": _defaults(IngestExecution), "tool_call": _defaults(IngestToolCall),
    "interaction": _defaults(IngestInteraction), "event": _defaults(IngestEvent),
}


def parse_ingest(value: object) -> dict[str, Any]:
    """``value`` checked as an ``IngestBatch`` (raises pydantic's ``ValidationError``),
    returned as plain dicts and lists: what ``Store.ingest`` takes."""
    return _INGEST.validate_python(value)  # type: ignore[no-any-return]


# -- jobs (issue 5) ----------------------------------------------------------

MAX_ARGV = 4096
MAX_ENV = 256
MAX_JOB_ATTEMPTS = 10


def _no_nul(value: str) -> str:
    # exec() cannot pass a NUL inside an argument, and PostgreSQL text cannot
    # store one: refuse it with the field's path rather than fail later.
    if "\x00" in value:
        raise ValueError("may not contain NUL characters")
    return value


Arg = Annotated[str, Field(max_length=131_072), AfterValidator(_no_nul)]
EnvName = Annotated[str, Field(min_length=1, max_length=256,
                               pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class JobCommand(_In):
    """Exactly one of ``argv`` (run as is, no shell) or ``shell`` (``/bin/sh -c``)."""

    argv: Annotated[list[Arg], Field(min_length=1, max_length=MAX_ARGV)] | None = None
    shell: Annotated[str, Field(min_length=1, max_length=1_000_000),
                     AfterValidator(_no_nul)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> JobCommand:
        if (self.argv is None) == (self.shell is None):
            raise ValueError('give exactly one of "argv" (a list) or "shell" (a string)')
        if self.argv is not None and not self.argv[0]:
            raise ValueError("argv[0] (the program) may not be empty")
        return self


class JobSubmit(_In):
    """``POST /api/jobs``: a command to run as a new execution."""

    command: JobCommand
    cwd: Annotated[str, Field(min_length=1, max_length=4096),
                   AfterValidator(_no_nul)] | None = None
    env: Annotated[dict[EnvName, Arg], Field(max_length=MAX_ENV)] | None = None
    timeout_s: float | None = Field(None, gt=0, le=31_536_000)
    name: Annotated[str, Field(max_length=1024)] | None = None
    labels: Labels | None = None
    requires_approval: bool = False
    idempotency_key: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    max_attempts: int = Field(1, ge=1, le=MAX_JOB_ATTEMPTS)
    trigger_kind: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class JobAction(_In):
    """The optional body of approve, reject, cancel and re-run: why, for the record."""

    reason: Message | None = None
