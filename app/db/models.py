"""Typed SQLAlchemy models: the schema the store reads and writes.

Times are ``BIGINT`` UTC epoch milliseconds (see ``app.times``): bucketing,
durations and keyset cursors are then plain integer arithmetic on both
dialects, with no timezone or date-function differences to paper over.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite. SQL NULL for None.
JsonValue = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-assigns ids to an INTEGER PRIMARY KEY (the rowid alias).
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Execution(Base):
    __tablename__ = "execution"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(128), server_default="default")
    status: Mapped[str] = mapped_column(String(32))
    trigger_kind: Mapped[str | None] = mapped_column(String(128))
    trigger_meta: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    name: Mapped[str | None] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    progress_pct: Mapped[float | None] = mapped_column(Float)
    progress_stage: Mapped[str | None] = mapped_column(Text)
    tool_call_count: Mapped[int] = mapped_column(Integer, server_default="0")
    had_elicitation: Mapped[bool] = mapped_column(Boolean, server_default="0")
    error_count: Mapped[int] = mapped_column(Integer, server_default="0")
    warn_count: Mapped[int] = mapped_column(Integer, server_default="0")
    labels: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    rerun_of: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        # The drawer lists a run's re-runs (revision 0002).
        Index("ix_execution_rerun_of", "rerun_of"),
        # The default list order, unscoped and scoped.
        Index("ix_execution_created_at_id", "created_at", "id"),
        Index("ix_execution_scope_id_created_at_id", "scope_id", "created_at", "id"),
        # A status or trigger filter walks its own index in time order.
        Index("ix_execution_status_created_at", "status", "created_at"),
        Index("ix_execution_trigger_kind_created_at", "trigger_kind", "created_at"),
        # Sorting by duration and the duration percentiles.
        Index("ix_execution_duration_ms_id", "duration_ms", "id"),
        # The elicitation facet counts both values by range instead of reading
        # every row (revision 0003; 265 -> 43 ms over 1 M runs).
        Index("ix_execution_had_elicitation_created_at", "had_elicitation", "created_at"),
    )


class ToolCall(Base):
    __tablename__ = "execution_tool_call"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    execution_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("execution.id", ondelete="CASCADE")
    )
    parent_id: Mapped[str | None] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)
    tool_path: Mapped[str] = mapped_column(Text)
    namespace: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    args: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    result: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_execution_tool_call_execution_id_seq", "execution_id", "seq", unique=True),
        # Covers the tool filter and the tool facet (distinct runs per path).
        Index("ix_execution_tool_call_tool_path_execution_id", "tool_path", "execution_id"),
        # The tool facet of a filtered list (the page's 24 h view) reads the
        # paths of the matching runs' calls from here instead of the table, and
        # the tool filter tests one run's paths here (revision 0005).
        Index("ix_execution_tool_call_execution_id_tool_path", "execution_id", "tool_path"),
    )


class Interaction(Base):
    __tablename__ = "execution_interaction"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    execution_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("execution.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    request: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    action: Mapped[str | None] = mapped_column(String(16))
    response: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    resolved_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_execution_interaction_execution_id_created_at", "execution_id", "created_at"),
    )


class Event(Base):
    __tablename__ = "execution_event"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("execution.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[Any] = mapped_column(JsonValue, nullable=True)

    __table_args__ = (
        Index("ix_execution_event_execution_id_seq", "execution_id", "seq", unique=True),
        # AUTOINCREMENT: an SSE id must never be handed out twice, even after pruning.
        {"sqlite_autoincrement": True},
    )


class Job(Base):
    __tablename__ = "job"

    execution_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("execution.id", ondelete="CASCADE"), primary_key=True
    )
    command: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    cwd: Mapped[str | None] = mapped_column(Text)
    env: Mapped[Any] = mapped_column(JsonValue, nullable=True)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="1")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), unique=True)
    # Revision 0002 (issue 5): the queue and the hand-over between processes.
    requires_approval: Mapped[bool] = mapped_column(Boolean, server_default="0")
    # Set while the job waits to be claimed; the claim order. NULL otherwise.
    queued_at: Mapped[int | None] = mapped_column(BigInteger)
    # Read by the holder's lease renewal, so a cancel reaches another process.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default="0")
    # The process group of the running attempt and its start time (clock ticks
    # since boot, from /proc), so a worker on the same host can kill what a lost
    # worker left behind without hitting a recycled pid.
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_start: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_job_queued_at", "queued_at"),
        Index("ix_job_lease_expires_at", "lease_expires_at"),
    )


class ApiToken(Base):
    """An access token (issue 7). Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_token"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # Comma-separated roles, e.g. "read,exec".
    roles: Mapped[str] = mapped_column(Text)
    # NULL: every scope.
    scope_id: Mapped[str | None] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64))
    # The first characters of the token, so `runyard token list` can tell them apart.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # Every authenticated request looks its token up by hash.
        Index("ix_api_token_token_hash", "token_hash", unique=True),
    )


class ServerKey(Base):
    """Server-wide secrets (the session and cursor signing key), created once so
    every replica on the same database signs alike."""

    __tablename__ = "server_key"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


executions = Execution.__table__
tool_calls = ToolCall.__table__
interactions = Interaction.__table__
events = Event.__table__
jobs = Job.__table__
api_tokens = ApiToken.__table__
server_keys = ServerKey.__table__
