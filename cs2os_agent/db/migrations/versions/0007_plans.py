"""Plans: named sets of migrations with shared defaults.

plans            one row per plan: name, owner, state (draft, running,
                 done, cancelled), defaults, the CloudStack selector it
                 was made from, and its VMs in order (items, JSON).
migrations.plan_id  the plan that started a migration (indexed, no
                 foreign key: a deleted plan leaves its migrations).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "plans",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("user_id", sa.String(64)),
        sa.Column("project_id", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("defaults", sa.JSON, nullable=False),
        sa.Column("selector", sa.JSON),
        sa.Column("items", sa.JSON, nullable=False),
    )
    op.create_index("ix_plans_name", "plans", ["name"])
    op.create_index("ix_plans_project_id", "plans", ["project_id"])
    op.create_index("ix_plans_state", "plans", ["state"])
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("plan_id", sa.String(36)))
        batch.create_index("ix_migrations_plan_id", ["plan_id"])
