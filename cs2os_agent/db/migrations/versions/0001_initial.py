"""Migrations and their events.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("source_ref", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("target_host", sa.String(255)),
        sa.Column("flavor", sa.String(255)),
        sa.Column("delete_source", sa.Boolean, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("user_id", sa.String(64)),
        sa.Column("project_id", sa.String(64)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("source_vm_id", sa.String(36)),
        sa.Column("source_vm_name", sa.String(255)),
        sa.Column("source", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("bytes_total", sa.BigInteger, nullable=False),
        sa.Column("rate_bps", sa.BigInteger, nullable=False),
        sa.Column("conductor", sa.String(255)),
        sa.Column("lease_until", sa.DateTime),
    )
    op.create_index("ix_migrations_state", "migrations", ["state"])
    op.create_index("ix_migrations_source_vm_id", "migrations",
                    ["source_vm_id"])
    op.create_index("ix_migrations_lease_until", "migrations",
                    ["lease_until"])
    op.create_table(
        "migration_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("migration_id", sa.String(36),
                  sa.ForeignKey("migrations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_migration_events_migration_id", "migration_events",
                    ["migration_id"])
