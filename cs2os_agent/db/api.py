"""Database access for migrations; every function is one short transaction.

Short transactions keep SQLite usable from several threads and let several
conductors share one MySQL/PostgreSQL database.  Rows go out as plain dicts,
so nothing outside this module holds a session.
"""

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import orm

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.db import models

_COLUMNS = [c.name for c in models.Migration.__table__.columns]
_FILTERS = ("state", "source_vm_id", "source_vm_name", "target_host",
            "compute_host", "project_id", "target_project_id", "source",
            "host", "plan_id")


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
        # What the caller asked for, or what CloudStack called the VM
        # (its id is known from the request on while the migration runs).
        return sa.or_(m.source_ref == value, m.source_vm_id == value,
                      m.source_vm_name == value, m.active_source == value)
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
        """Insert a migration.

        A second active migration of the same CloudStack VM (the same
        ``active_source``) raises MigrationConflict naming the active one;
        a repeated ``idempotency_key`` of the same project returns the
        migration it created first (with ``replayed`` set).
        """
        try:
            with self._session.begin() as session:
                row = models.Migration(**values)
                session.add(row)
                session.flush()
                return _to_dict(row)
        except sa.exc.IntegrityError:
            # Which unique column refused it: look, rather than parse the
            # driver's message (SQLite, MySQL and PostgreSQL differ).
            key = values.get("idempotency_key")
            if key:
                first = self.find_by_idempotency_key(
                    values.get("project_id"), key)
                if first is not None:
                    return dict(first, replayed=True)
            active = values.get("active_source")
            holder = self.active_migration_of(active) if active else None
            if holder is not None:
                raise exception.MigrationConflict(
                    vm=active, active=holder["id"],
                    state=holder["state"]) from None
            raise

    def find_by_idempotency_key(self, project_id, key):
        query = sa.select(models.Migration).where(
            models.Migration.idempotency_key == key,
            models.Migration.project_id == project_id)
        with self._session() as session:
            row = session.scalars(query).first()
            return _to_dict(row) if row is not None else None

    def active_migration_of(self, vm_id):
        """The active migration of CloudStack VM ``vm_id``, or None."""
        query = sa.select(models.Migration).where(
            models.Migration.active_source == vm_id)
        with self._session() as session:
            row = session.scalars(query).first()
            return _to_dict(row, events=False) if row is not None else None

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
        A final state frees the CloudStack VM for another migration (in
        the same UPDATE); making one active again claims it, and raises
        MigrationConflict if another active migration holds it.
        """
        query = _update_where(migration_id, expect)
        values = dict(values, updated_at=models.utcnow())
        final = values.get("state") in states.FINAL
        if final:
            values["active_source"] = None
        try:
            with self._session.begin() as session:
                count = session.execute(query.values(**values)).rowcount
                if count == 0:
                    if session.get(models.Migration, migration_id) is None:
                        raise exception.MigrationNotFound(
                            migration_id=migration_id)
                    return None
                if final:  # no longer in flight: its slots are free
                    session.execute(sa.delete(models.Slot).where(
                        models.Slot.migration_id == migration_id))
        except sa.exc.IntegrityError:
            vm_id = values.get("active_source")
            holder = self.active_migration_of(vm_id) if vm_id else None
            if holder is None:
                raise
            raise exception.MigrationConflict(
                vm=vm_id, active=holder["id"],
                state=holder["state"]) from None
        return self.get_migration(migration_id)

    def add_event(self, migration_id, step, kind, message, expect=None):
        """Append an event; with ``expect`` only if the row still matches
        (in the same transaction), else False."""
        with self._session.begin() as session:
            if expect:
                query = _update_where(migration_id, expect).values(
                    updated_at=models.utcnow())
                if session.execute(query).rowcount != 1:
                    return False
            session.add(models.MigrationEvent(
                migration_id=migration_id, step=step, kind=kind,
                message=message))
        return True

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
        """Take a migration if it is unclaimed, ours, or its lease expired.

        Returns the claim's epoch (one more than the last claim's: whoever
        held it before is fenced from now on), or None if it is taken.
        """
        m = models.Migration
        query = sa.update(m).where(
            m.id == migration_id,
            sa.or_(m.conductor == conductor, m.conductor.is_(None),
                   m.lease_until < now),
        ).values(conductor=conductor, lease_until=lease_until,
                 lease_epoch=m.lease_epoch + 1)
        with self._session.begin() as session:
            if session.execute(query).rowcount != 1:
                return None
            return session.scalar(sa.select(m.lease_epoch).where(
                m.id == migration_id))

    def renew(self, migration_id, conductor, epoch, lease_until):
        """Extend a claim that is still this conductor's, at this epoch.

        True if it was; False means another conductor claimed it since,
        and this one must not act on it again.  A lease that lapsed but
        nobody claimed is still ours: the epoch proves it.
        """
        m = models.Migration
        query = sa.update(m).where(
            m.id == migration_id, m.conductor == conductor,
            m.lease_epoch == epoch,
        ).values(lease_until=lease_until)
        with self._session.begin() as session:
            return session.execute(query).rowcount == 1

    # -- slots: migrations in flight per shared resource -------------------

    def acquire_slots(self, migration_id, limits):
        """One slot of each resource in ``limits`` ({resource: limit})
        for ``migration_id``: all of them, or none.

        Returns None when the migration holds them (a repeated call takes
        nothing more), else the resource that has no free slot.  Two
        conductors counting at once cannot both take the last slot: the
        second one's insert breaks the primary key, and it is told the
        resource is full.
        """
        slot = models.Slot
        try:
            with self._session.begin() as session:
                held = set(session.scalars(sa.select(slot.resource).where(
                    slot.migration_id == migration_id)))
                for resource, limit in sorted(limits.items()):
                    if resource in held:
                        continue
                    taken = set(session.scalars(sa.select(slot.number).where(
                        slot.resource == resource)))
                    free = [n for n in range(limit) if n not in taken]
                    if not free:
                        raise _Full(resource)
                    session.add(slot(resource=resource, number=free[0],
                                     migration_id=migration_id))
                    session.flush()
        except _Full as full:
            return full.resource
        except sa.exc.IntegrityError:
            # Another conductor took that slot between our read and our
            # insert: as full as it gets, for now.
            return "a slot another conductor took at the same time"
        return None

    def slot_holders(self, resource):
        """The migrations holding a slot of ``resource``, by slot."""
        slot = models.Slot
        query = sa.select(slot.migration_id).where(
            slot.resource == resource).order_by(slot.number)
        with self._session() as session:
            return list(session.scalars(query))


class _Full(Exception):
    def __init__(self, resource):
        super().__init__(resource)
        self.resource = resource


def _update_where(migration_id, expect):
    """An UPDATE of one migration that matches only while every column in
    ``expect`` still has its value (compare-and-set, fencing)."""
    query = sa.update(models.Migration).where(
        models.Migration.id == migration_id)
    for key, value in (expect or {}).items():
        query = query.where(getattr(models.Migration, key) == value)
    return query


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL lets readers (API, list) go on while a migration writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
