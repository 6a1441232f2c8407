"""Which step the progress columns count.

progress_step  the step whose copy bytes_done, bytes_total and rate_bps
               measure (image: the template upload; sync: the agent's
               copy; mirror, ready: the live mirror).  While the record's
               step is another one, that step has no byte progress of its
               own, and the API says so instead of showing the last copy's
               bytes as if they were the current step's.  NULL on records
               from before: their progress is shown as it always was.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("progress_step", sa.String(32)))
