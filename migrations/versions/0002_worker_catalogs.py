"""worker catalogs: what each worker can build (model module trees, datasets, devices)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_catalogs",
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("published_at", backend.models.UTCDateTime(), nullable=False),
        sa.Column("catalog", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("worker", name=op.f("pk_worker_catalogs")),
    )


def downgrade() -> None:
    op.drop_table("worker_catalogs")
