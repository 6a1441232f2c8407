"""The figures of the conductor's metrics endpoint (conductor/metrics.py).

Aggregates only: each query is a COUNT or a SUM the database computes
(GROUP BY state, an indexed column; the SUM of bytes_moved reads the
table), so no row leaves the database.  All of them in one read
transaction, so the figures of one scrape agree.
"""

import sqlalchemy as sa

from cs2os_agent.db import models

# The kinds of slot resource (flow/admission.py): "all", "compute:<host>",
# "kvm:<host>", "pool:<id>".  A plan's own caps ("plan:<id>/...") are
# not counted: they are the same migrations again, under the plan's cap.
SLOT_KINDS = ("all", "compute", "kvm", "pool")


def _slot_counts():
    """One row: the slots held of each kind (SUM of a CASE, not GROUP BY
    a CASE: PostgreSQL would see the CASE's bound prefixes in the select
    and in the GROUP BY as two different expressions)."""
    resource = models.Slot.resource
    matches = {"all": resource == "all"}
    for kind in SLOT_KINDS[1:]:
        matches[kind] = resource.like(kind + ":%")
    return sa.select(*(
        sa.func.coalesce(sa.func.sum(sa.case((match, 1), else_=0)), 0)
        .label(kind) for kind, match in matches.items()))


def figures(db):
    """{"migrations": {state: count}, "bytes_moved": int,
    "plans": {state: count}, "slots": {kind: count}}.

    ``bytes_moved``: the sum of ``migrations.bytes_moved`` over every
    migration, whatever its state (db/moved.py: each copy's bytes crossed
    the wire, a failed or cancelled migration's too; NULL rows add
    nothing).  States absent from the database are not in the dicts; the
    caller fills in the zeros.
    """
    m, plan = models.Migration, models.Plan
    with db._session() as session:
        migrations = dict(session.execute(
            sa.select(m.state, sa.func.count()).group_by(m.state)).all())
        moved = session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(m.bytes_moved), 0)))
        plans = dict(session.execute(
            sa.select(plan.state, sa.func.count())
            .group_by(plan.state)).all())
        slots = session.execute(_slot_counts()).one()._asdict()
    return {"migrations": {k: int(v) for k, v in migrations.items()},
            "bytes_moved": int(moved or 0),
            "plans": {k: int(v) for k, v in plans.items()},
            "slots": {k: int(v) for k, v in slots.items()}}
