"""Every byte a migration moved across clouds.

migrations.bytes_moved  the template upload, the root disk's copy, each
                        data disk's and the warm mirror's bytes, as the
                        record's ``result`` names them (db/moved.py
                        computes it at each write of ``result``); NULL
                        only on a row an older conductor wrote after this
                        upgrade.  The rows already there are filled in
                        here from their ``result``, so the Prometheus
                        counter keeps their bytes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 500

# The table as this revision knows it (not the models': they move on).
_migrations = sa.table(
    "migrations", sa.column("id", sa.String(36)),
    sa.column("result", sa.JSON), sa.column("bytes_moved", sa.BigInteger))


def _bytes(value):
    return int(value) if isinstance(value, (int, float)) else 0


def _moved(result):
    """db/moved.py's rule as of this revision, frozen: a later change of
    that rule must not change what this upgrade writes."""
    result = result or {}
    total = _bytes(result.get("template_bytes_moved"))
    sync = result.get("sync")
    if isinstance(sync, dict):
        source = sync.get("source")
        if not (isinstance(source, dict)
                and source.get("transport") == "mirror"):
            total += _bytes(sync.get("bytes_copied"))
    for disk in result.get("data_disks") or []:
        if isinstance(disk, dict):
            total += _bytes(disk.get("bytes_copied"))
    mirror = result.get("mirror")
    if isinstance(mirror, dict):
        total += _bytes(mirror.get("bytes"))
    return max(total, 0)


def upgrade():
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("bytes_moved", sa.BigInteger))
    bind = op.get_bind()
    last = ""
    # In batches by primary key: a large table is never read whole.
    while True:
        rows = bind.execute(
            sa.select(_migrations.c.id, _migrations.c.result)
            .where(_migrations.c.id > last)
            .order_by(_migrations.c.id).limit(BATCH)).all()
        if not rows:
            return
        for row in rows:
            bind.execute(sa.update(_migrations)
                         .where(_migrations.c.id == row.id)
                         .values(bytes_moved=_moved(row.result)))
        last = rows[-1].id
