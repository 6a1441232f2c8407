"""Database access for plans (db.models.Plan); short transactions, rows
out as plain dicts, as db/api.py does for migrations.  Each write is one
transaction, run again whole when the database refuses it for a deadlock
(or SQLite's "database is locked" on a read turning into a write)."""

import sqlalchemy as sa
from oslo_db import exception as db_exc

from cs2os_agent.db import api as db_api
from cs2os_agent.db import models

_COLUMNS = [c.name for c in models.Plan.__table__.columns]


class PlanNotFoundError(LookupError):
    """No plan with that id (the conductor turns it into its own error)."""


def _to_dict(row):
    data = {name: getattr(row, name) for name in _COLUMNS}
    for key in ("created_at", "updated_at"):
        if data[key] is not None:
            data[key] = data[key].isoformat()
    return data


@db_api.retry_on_deadlock
def create(db, values):
    with db._session.begin() as session:
        row = models.Plan(**values)
        session.add(row)
        session.flush()
        return _to_dict(row)


def get(db, plan_id):
    with db._session() as session:
        row = session.get(models.Plan, plan_id)
        if row is None:
            raise PlanNotFoundError(plan_id)
        return _to_dict(row)


def list_(db, filters=None):
    """Newest first; ``filters``: name, state, project_id (exact)."""
    query = sa.select(models.Plan)
    for key, value in (filters or {}).items():
        query = query.where(getattr(models.Plan, key) == value)
    query = query.order_by(models.Plan.created_at.desc(),
                           models.Plan.id.desc())
    with db._session() as session:
        return [_to_dict(r) for r in session.scalars(query)]


@db_api.retry_on_deadlock
def update(db, plan_id, values, expect_state=None):
    """The updated plan, or None when ``expect_state`` no longer holds."""
    query = sa.update(models.Plan).where(models.Plan.id == plan_id)
    if expect_state is not None:
        query = query.where(models.Plan.state == expect_state)
    values = dict(values, updated_at=models.utcnow())
    with db._session.begin() as session:
        if session.execute(query.values(**values)).rowcount != 1:
            if session.get(models.Plan, plan_id) is None:
                raise PlanNotFoundError(plan_id)
            return None
    return get(db, plan_id)


@db_api.retry_on_deadlock
def delete(db, plan_id):
    with db._session.begin() as session:
        row = session.get(models.Plan, plan_id)
        if row is None:
            raise PlanNotFoundError(plan_id)
        # Explicitly: SQLite cascades only with its foreign keys pragma.
        session.execute(sa.delete(models.PlanEvent).where(
            models.PlanEvent.plan_id == plan_id))
        session.delete(row)


# -- the plan's event log ----------------------------------------------------

@db_api.retry_on_deadlock
def add_event(db, plan_id, kind, message, vm=None, migration_id=None,
              dedupe=None, at=None):
    """Append an event; one with a ``dedupe`` key its plan has already is
    not added again (False)."""
    values = {"plan_id": plan_id, "kind": kind, "message": message,
              "vm": vm, "migration_id": migration_id, "dedupe": dedupe}
    if at is not None:
        values["created_at"] = at
    try:
        with db._session.begin() as session:
            session.add(models.PlanEvent(**values))
    except (sa.exc.IntegrityError, db_exc.DBDuplicateEntry):
        # (oslo.db's engines raise the latter.)
        if dedupe is None:
            raise
        return False  # whoever looked first recorded it
    return True


def events(db, plan_id):
    """The plan's events, oldest first."""
    event = models.PlanEvent
    query = sa.select(event).where(event.plan_id == plan_id).order_by(
        event.created_at, event.id)
    with db._session() as session:
        return [{"created_at": e.created_at.isoformat(), "kind": e.kind,
                 "vm": e.vm, "migration_id": e.migration_id,
                 "message": e.message} for e in session.scalars(query)]


def dedupe_keys(db, plan_id):
    """The dedupe keys the plan's events carry."""
    event = models.PlanEvent
    query = sa.select(event.dedupe).where(event.plan_id == plan_id,
                                          event.dedupe.is_not(None))
    with db._session() as session:
        return set(session.scalars(query))


def waiting_for(db, plan_id, resources):
    """[(migration id, its options, the resource)] of the plan's active
    migrations waiting for one of ``resources`` (flow/admission.py)."""
    m = models.Migration
    query = sa.select(m.id, m.options, m.waiting_for).where(
        m.plan_id == plan_id, m.state.in_(("queued", "running")),
        m.waiting_for.in_(sorted(resources)))
    with db._session() as session:
        return [tuple(row) for row in session.execute(query)]
