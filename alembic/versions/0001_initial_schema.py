"""Initial schema: executions, tool calls, interactions, events, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Revisions never import the models: they describe the schema as it was then.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["execution_id"], ["execution.id"],
                                   name=f"fk_{table}_execution_id_execution", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "execution",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("scope_id", sa.String(128), server_default="default", nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("trigger_kind", sa.String(128), nullable=True),
        sa.Column("trigger_meta", JSON, nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("progress_pct", sa.Float(), nullable=True),
        sa.Column("progress_stage", sa.Text(), nullable=True),
        sa.Column("tool_call_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("had_elicitation", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("error_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("warn_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("labels", JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("rerun_of", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_execution"),
    )
    op.create_index("ix_execution_created_at_id", "execution", ["created_at", "id"])
    op.create_index("ix_execution_scope_id_created_at_id", "execution",
                    ["scope_id", "created_at", "id"])
    op.create_index("ix_execution_status_created_at", "execution", ["status", "created_at"])
    op.create_index("ix_execution_trigger_kind_created_at", "execution",
                    ["trigger_kind", "created_at"])
    op.create_index("ix_execution_duration_ms_id", "execution", ["duration_ms", "id"])

    op.create_table(
        "execution_tool_call",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("execution_id", sa.String(128), nullable=False),
        sa.Column("parent_id", sa.String(128), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tool_path", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("args", JSON, nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        _fk("execution_tool_call"),
        sa.PrimaryKeyConstraint("id", name="pk_execution_tool_call"),
    )
    op.create_index("ix_execution_tool_call_execution_id_seq", "execution_tool_call",
                    ["execution_id", "seq"], unique=True)
    op.create_index("ix_execution_tool_call_tool_path_execution_id", "execution_tool_call",
                    ["tool_path", "execution_id"])

    op.create_table(
        "execution_interaction",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("execution_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("request", JSON, nullable=True),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("response", JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        _fk("execution_interaction"),
        sa.PrimaryKeyConstraint("id", name="pk_execution_interaction"),
    )
    op.create_index("ix_execution_interaction_execution_id_created_at", "execution_interaction",
                    ["execution_id", "created_at"])

    op.create_table(
        "execution_event",
        sa.Column("id", EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("execution_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("data", JSON, nullable=True),
        _fk("execution_event"),
        sa.PrimaryKeyConstraint("id", name="pk_execution_event"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_execution_event_execution_id_seq", "execution_event",
                    ["execution_id", "seq"], unique=True)

    op.create_table(
        "job",
        sa.Column("execution_id", sa.String(128), nullable=False),
        sa.Column("command", JSON, nullable=True),
        sa.Column("cwd", sa.Text(), nullable=True),
        sa.Column("env", JSON, nullable=True),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        _fk("job"),
        sa.PrimaryKeyConstraint("execution_id", name="pk_job"),
        sa.UniqueConstraint("idempotency_key", name="uq_job_idempotency_key"),
    )


def downgrade() -> None:
    op.drop_table("job")
    op.drop_table("execution_event")
    op.drop_table("execution_interaction")
    op.drop_table("execution_tool_call")
    op.drop_table("execution")
