"""Fencing and uniqueness: one actor per migration, one migration per VM.

lease_epoch   grows by one at every claim; a conductor writes the record
              only where the epoch is still the one it claimed with, so a
              conductor whose lease lapsed (paused, partitioned) is refused
              by the database itself.
active_source the CloudStack VM id while the migration is active, NULL once
              it is final: a unique index makes a second active migration
              of the same VM impossible, whatever the request called it.
committed     the migrated disk is the guest's from now on (the Nova server
              was asked to start on it): a cancel compares-and-sets on it.
idempotency_key  a client's retry of the same create returns the same
              migration (unique per project).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("lease_epoch", sa.Integer,
                                   nullable=False, server_default="0"))
        batch.add_column(sa.Column("active_source", sa.String(36)))
        batch.add_column(sa.Column("committed", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("idempotency_key", sa.String(255)))
        batch.create_index("ux_migrations_active_source", ["active_source"],
                           unique=True)
        batch.create_index("ux_migrations_idempotency_key",
                           ["project_id", "idempotency_key"], unique=True)
