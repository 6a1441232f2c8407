"""The compute host a migration landed on, to filter by it.

The requested host (target_host) is empty when Nova's scheduler chose;
operators still ask "what moved onto compute-3".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("compute_host", sa.String(255)))
        batch.create_index("ix_migrations_compute_host", ["compute_host"])
