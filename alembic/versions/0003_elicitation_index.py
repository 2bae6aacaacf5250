"""An index for the elicitation facet: (had_elicitation, created_at).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_execution_had_elicitation_created_at", "execution",
                    ["had_elicitation", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_execution_had_elicitation_created_at", table_name="execution")
