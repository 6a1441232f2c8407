"""The Keystone project a migrated server lands in.

target_project_id  the owner's project (from [cloudstack] project_map or
                   the request's project), resolved by the first step;
                   NULL until then.  project_id stays the project of the
                   caller who created the migration.  Indexed: a project's
                   readers list the migrations filtered on it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("target_project_id", sa.String(64)))
        batch.create_index("ix_migrations_target_project_id",
                           ["target_project_id"])
