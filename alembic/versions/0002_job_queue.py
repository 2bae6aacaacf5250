"""Job queue: approval flag, queue position, cancel requests, process identity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("requires_approval", sa.Boolean(), server_default="0",
                                   nullable=False))
        batch.add_column(sa.Column("queued_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), server_default="0",
                                   nullable=False))
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pid_start", sa.BigInteger(), nullable=True))
    # Claiming walks queued jobs in order; recovery finds expired leases.
    op.create_index("ix_job_queued_at", "job", ["queued_at"])
    op.create_index("ix_job_lease_expires_at", "job", ["lease_expires_at"])
    # The drawer shows a run's re-runs.
    op.create_index("ix_execution_rerun_of", "execution", ["rerun_of"])


def downgrade() -> None:
    op.drop_index("ix_execution_rerun_of", table_name="execution")
    op.drop_index("ix_job_lease_expires_at", table_name="job")
    op.drop_index("ix_job_queued_at", table_name="job")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("pid_start")
        batch.drop_column("pid")
        batch.drop_column("cancel_requested")
        batch.drop_column("queued_at")
        batch.drop_column("requires_approval")
