"""An index for the tool facet of a filtered list: (execution_id, tool_path).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_execution_tool_call_execution_id_tool_path", "execution_tool_call",
                    ["execution_id", "tool_path"])


def downgrade() -> None:
    op.drop_index("ix_execution_tool_call_execution_id_tool_path",
                  table_name="execution_tool_call")
