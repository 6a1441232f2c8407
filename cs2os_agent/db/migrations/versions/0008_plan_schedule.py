"""Plans: limits, an event log, and the order of waiters for a slot.

plans.limits           a plan's own caps on its migrations in flight
                       (JSON: max_in_flight, max_per_compute_host,
                       max_per_kvm_host, max_per_pool), NULL: none.
plan_events            the plan's event log: created, validated, started,
                       each VM's migration created, skipped or ended,
                       cancelled, retried, done; ``dedupe`` unique per plan
                       for events whoever sees first records.
migrations.waiting_for the slot resource a migration waits for in
                       validate: a later VM of its plan yields to it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("limits", sa.JSON))
    op.create_table(
        "plan_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("plan_id", sa.String(36),
                  sa.ForeignKey("plans.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("vm", sa.String(255)),
        sa.Column("migration_id", sa.String(36)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("dedupe", sa.String(100)),
    )
    op.create_index("ix_plan_events_plan_id", "plan_events", ["plan_id"])
    op.create_index("ux_plan_events_dedupe", "plan_events",
                    ["plan_id", "dedupe"], unique=True)
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("waiting_for", sa.String(300)))
