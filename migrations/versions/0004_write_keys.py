"""write keys: each stored write by its sender's key, so a write sent again after a lost answer is stored once

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("created_at", backend.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_write_keys")),
    )
    op.create_index(op.f("ix_write_keys_created_at"), "write_keys", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_write_keys_created_at"), table_name="write_keys")
    op.drop_table("write_keys")
