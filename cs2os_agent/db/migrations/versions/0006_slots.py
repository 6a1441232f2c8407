"""Slots: how many migrations are in flight per shared resource.

slots  (resource, number) -> migration_id: a migration in flight holds
       one numbered slot of each resource it uses (target compute host,
       CloudStack KVM host, primary storage pool, and "all"); numbers
       run below the resource's [conductor] max_* limit, and the primary
       key keeps two conductors from taking the same one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "slots",
        sa.Column("resource", sa.String(300), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True,
                  autoincrement=False),
        sa.Column("migration_id", sa.String(36),
                  sa.ForeignKey("migrations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_slots_migration_id", "slots", ["migration_id"])
