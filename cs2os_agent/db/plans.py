"""Database access for plans (db.models.Plan); short transactions, rows
out as plain dicts, as db/api.py does for migrations."""

import sqlalchemy as sa

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


def delete(db, plan_id):
    with db._session.begin() as session:
        row = session.get(models.Plan, plan_id)
        if row is None:
            raise PlanNotFoundError(plan_id)
        session.delete(row)
