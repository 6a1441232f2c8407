"""Database access for migrations; every function is one short transaction.

Short transactions keep SQLite usable from several threads and let several
conductors share one MySQL/PostgreSQL database.  Rows go out as plain dicts,
so nothing outside this module holds a session.
"""

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import orm

from cs2os_agent.common import exception
from cs2os_agent.db import models

_COLUMNS = [c.name for c in models.Migration.__table__.columns]
_FILTERS = ("state", "source_vm_id", "source_vm_name", "target_host",
            "compute_host", "project_id", "source", "host")


def _to_dict(row, events=True):
    data = {name: getattr(row, name) for name in _COLUMNS}
    for key in ("created_at", "updated_at", "started_at", "finished_at",
                "lease_until"):
        if data[key] is not None:
            data[key] = data[key].isoformat()
    if events:
        data["events"] = [
            {"created_at": e.created_at.isoformat(), "step": e.step,
             "kind": e.kind, "message": e.message}
            for e in row.events
        ]
    return data


def _filter(key, value):
    m = models.Migration
    if key == "source":
        # What the caller asked for, or what CloudStack called the VM.
        return sa.or_(m.source_ref == value, m.source_vm_id == value,
                      m.source_vm_name == value)
    if key == "host":
        # The requested host, or the one Nova's scheduler chose.
        return sa.or_(m.target_host == value, m.compute_host == value)
    return getattr(m, key) == value


class Database:
    def __init__(self, url, sqlite_busy_timeout=30):
        kwargs = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False,
                                      "timeout": sqlite_busy_timeout}
        else:
            kwargs["pool_pre_ping"] = True
        self.url = url
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = orm.sessionmaker(self.engine, expire_on_commit=False)

    def create_migration(self, values):
        with self._session.begin() as session:
            row = models.Migration(**values)
            session.add(row)
            session.flush()
            return _to_dict(row)

    def get_migration(self, migration_id):
        with self._session() as session:
            row = session.get(models.Migration, migration_id)
            if row is None:
                raise exception.MigrationNotFound(migration_id=migration_id)
            return _to_dict(row)

    def list_migrations(self, filters=None, limit=None, marker=None):
        """Newest first; ``marker`` is the id of the last row seen."""
        filters = dict(filters or {})
        unknown = set(filters) - set(_FILTERS)
        if unknown:
            raise exception.Invalid(
                reason="unknown filter(s) %s; known: %s"
                % (", ".join(sorted(unknown)), ", ".join(_FILTERS)))
        query = sa.select(models.Migration)
        for key, value in filters.items():
            query = query.where(_filter(key, value))
        query = query.order_by(models.Migration.created_at.desc(),
                               models.Migration.id.desc())
        with self._session() as session:
            if marker is not None:
                last = session.get(models.Migration, marker)
                if last is None:
                    raise exception.MigrationNotFound(migration_id=marker)
                query = query.where(sa.or_(
                    models.Migration.created_at < last.created_at,
                    sa.and_(models.Migration.created_at == last.created_at,
                            models.Migration.id < last.id)))
            if limit is not None:
                query = query.limit(limit)
            return [_to_dict(r, events=False)
                    for r in session.scalars(query)]

    def update_migration(self, migration_id, values, expect=None):
        """Update a row; with ``expect`` ({column: value}) only if it still
        matches, so two conductors cannot both act on a stale read.

        Returns the updated row, or None when ``expect`` did not match.
        """
        query = sa.update(models.Migration).where(
            models.Migration.id == migration_id)
        for key, value in (expect or {}).items():
            query = query.where(getattr(models.Migration, key) == value)
        values = dict(values, updated_at=models.utcnow())
        with self._session.begin() as session:
            count = session.execute(query.values(**values)).rowcount
            if count == 0:
                if session.get(models.Migration, migration_id) is None:
                    raise exception.MigrationNotFound(
                        migration_id=migration_id)
                return None
        return self.get_migration(migration_id)

    def add_event(self, migration_id, step, kind, message):
        with self._session.begin() as session:
            session.add(models.MigrationEvent(
                migration_id=migration_id, step=step, kind=kind,
                message=message))

    def claimable(self, conductor, now, states):
        """Ids in ``states`` this conductor may run: its own, or any whose
        claim has expired (the conductor that had it is gone)."""
        query = sa.select(models.Migration.id).where(
            models.Migration.state.in_(states),
            sa.or_(models.Migration.conductor == conductor,
                   models.Migration.conductor.is_(None),
                   models.Migration.lease_until < now),
        ).order_by(models.Migration.created_at)
        with self._session() as session:
            return list(session.scalars(query))

    def claim(self, migration_id, conductor, now, lease_until):
        """Take a migration if it is unclaimed, ours, or its lease expired."""
        query = sa.update(models.Migration).where(
            models.Migration.id == migration_id,
            sa.or_(models.Migration.conductor == conductor,
                   models.Migration.conductor.is_(None),
                   models.Migration.lease_until < now),
        ).values(conductor=conductor, lease_until=lease_until)
        with self._session.begin() as session:
            return session.execute(query).rowcount == 1

    def renew(self, conductor, migration_ids, lease_until):
        if not migration_ids:
            return
        query = sa.update(models.Migration).where(
            models.Migration.id.in_(migration_ids),
            models.Migration.conductor == conductor,
        ).values(lease_until=lease_until)
        with self._session.begin() as session:
            session.execute(query)


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL lets readers (API, list) go on while a migration writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
