"""run files: one random id per database, naming its runs' folders on every host; deleted runs' ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 02:20:00
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import backend.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "database_identity",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", backend.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_database_identity")),
    )
    op.bulk_insert(table, [{"id": uuid.uuid4().hex, "created_at": backend.models.utcnow()}])
    op.create_table(
        "deleted_runs",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("deleted_at", backend.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_deleted_runs")),
    )


def downgrade() -> None:
    op.drop_table("deleted_runs")
    op.drop_table("database_identity")
