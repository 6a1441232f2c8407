"""Database access for migrations; every function is one short transaction.

Short transactions keep SQLite usable from several threads and let several
conductors share one MySQL/PostgreSQL database.  Rows go out as plain dicts,
so nothing outside this module holds a session.

The engine and the sessions come from an oslo.db transaction context of
each Database's own (enginefacade): its [database] options (pool sizes,
recycle time, connection retries, mysql_sql_mode) are the global CONF's.
Writes that a Galera cluster (or InnoDB, or PostgreSQL) may refuse with a
deadlock are retried whole: each is one transaction, rolled back entirely
when refused, and idempotent to run again (see _retry_on_deadlock).
"""

import functools

import sqlalchemy as sa
from oslo_db import api as oslo_db_api
from oslo_db import exception as db_exc
from oslo_db.sqlalchemy import enginefacade
from sqlalchemy import event

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.db import models
from cs2os_agent.db import moved

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


def _with_bytes_moved(values):
    """``values`` with bytes_moved computed from the ``result`` they
    write (db/moved.py), in the same UPDATE: never out of step with it."""
    if values.get("result") is None:
        return values
    return dict(values, bytes_moved=moved.bytes_moved(values["result"]))


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


def _sqlite_busy(exc):
    """SQLite's deadlock: a transaction that read, then found another
    writer committed first, cannot become a writer (busy at once, whatever
    the busy timeout).  Rolled back, it may run again like a deadlock."""
    return (isinstance(exc, sa.exc.OperationalError)
            and "database is locked" in str(exc))


# Only on units of work that are one transaction (a deadlock rolls all of
# it back) and that decide again from what they read when run again:
# inserts, and compare-and-set updates.  A lost connection is not retried:
# a COMMIT whose answer was lost may have happened.
_retry_on_deadlock = oslo_db_api.wrap_db_retry(
    max_retries=5, retry_interval=0.2, max_retry_interval=2,
    retry_on_deadlock=True, exception_checker=_sqlite_busy)
# The same, for the other modules' units of work (db/plans.py).
retry_on_deadlock = _retry_on_deadlock


class Database:
    def __init__(self, url, sqlite_busy_timeout=30, wait_for_database=False):
        """``wait_for_database``: try to connect now, as often as [database]
        max_retries says (cs2os-conductor at start); else nothing connects
        before the first query, which fails at once if it cannot."""
        self.url = url
        self._transactions = enginefacade.transaction_context()
        settings = {"connection": url, "sqlite_fk": True,
                    # cs2os reads its own writes at once (claims, leases):
                    # every query goes to the primary, never a replica.
                    "slave_connection": None}
        if not wait_for_database:
            settings["max_retries"] = 0
        self._transactions.configure(**settings)
        self._transactions.append_on_engine_create(functools.partial(
            _on_engine_create, sqlite_busy_timeout=sqlite_busy_timeout))
        self.engine = self._transactions.writer.get_engine()
        # Sessions for db/plans.py (and anything that needs one): oslo.db's.
        self._session = self._transactions.writer.get_sessionmaker()

    def _writer(self):
        """A transaction of its own (a new context: never joins the
        caller's), committed when the block ends."""
        return self._transactions.writer.using(_UnitOfWork())

    def _reader(self):
        return self._transactions.reader.using(_UnitOfWork())

    @_retry_on_deadlock
    def create_migration(self, values):
        """Insert a migration.

        A second active migration of the same CloudStack VM (the same
        ``active_source``) raises MigrationConflict naming the active one;
        a repeated ``idempotency_key`` of the same project returns the
        migration it created first (with ``replayed`` set).
        """
        values = _with_bytes_moved(values)
        try:
            with self._writer() as session:
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
        with self._reader() as session:
            row = session.scalars(query).first()
            return _to_dict(row) if row is not None else None

    def active_migration_of(self, vm_id):
        """The active migration of CloudStack VM ``vm_id``, or None."""
        query = sa.select(models.Migration).where(
            models.Migration.active_source == vm_id)
        with self._reader() as session:
            row = session.scalars(query).first()
            return _to_dict(row, events=False) if row is not None else None

    def get_migration(self, migration_id):
        with self._reader() as session:
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
        with self._reader() as session:
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

    @_retry_on_deadlock
    def update_migration(self, migration_id, values, expect=None):
        """Update a row; with ``expect`` ({column: value}) only if it still
        matches, so two conductors cannot both act on a stale read.

        Returns the updated row, or None when ``expect`` did not match.
        A final state frees the CloudStack VM for another migration (in
        the same UPDATE); making one active again claims it, and raises
        MigrationConflict if another active migration holds it.
        """
        query = _update_where(migration_id, expect)
        values = dict(_with_bytes_moved(values), updated_at=models.utcnow())
        final = values.get("state") in states.FINAL
        if final:
            values["active_source"] = None
        try:
            with self._writer() as session:
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

    @_retry_on_deadlock
    def add_event(self, migration_id, step, kind, message, expect=None):
        """Append an event; with ``expect`` only if the row still matches
        (in the same transaction), else False."""
        with self._writer() as session:
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
        """Ids in ``states`` this conductor may run: its own, unclaimed
        ones, or any whose claim has expired (its conductor is gone)."""
        return [row["id"] for row in
                self.claim_candidates(conductor, now, states)]

    def claim_candidates(self, conductor, now, states):
        """What claimable() finds, as {id, state, options, created_at},
        oldest first: enough to order them and to skip those waiting for
        their start time without reading each."""
        m = models.Migration
        query = sa.select(m.id, m.state, m.options, m.created_at).where(
            m.state.in_(states), _claimable(m, conductor, now),
        ).order_by(m.created_at)
        with self._reader() as session:
            return [row._asdict() for row in session.execute(query)]

    @_retry_on_deadlock
    def claim(self, migration_id, conductor, now, lease_until):
        """Take an active migration if it is unclaimed, ours, released,
        or its lease expired.

        Returns the claim's epoch (one more than the last claim's: whoever
        held it before is fenced from now on), or None if it is taken.
        """
        m = models.Migration
        query = sa.update(m).where(
            # Active only: a migration another conductor ended (and
            # released) since the caller listed it is not run again.
            m.id == migration_id, m.state.in_(states.ACTIVE),
            _claimable(m, conductor, now),
        ).values(conductor=conductor, lease_until=lease_until,
                 lease_epoch=m.lease_epoch + 1)
        with self._writer() as session:
            if session.execute(query).rowcount != 1:
                return None
            return session.scalar(sa.select(m.lease_epoch).where(
                m.id == migration_id))

    @_retry_on_deadlock
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
        with self._writer() as session:
            return session.execute(query).rowcount == 1

    # -- slots: migrations in flight per shared resource -------------------

    @_retry_on_deadlock
    def acquire_slots(self, migration_id, limits):
        """One slot of each resource in ``limits`` ({resource: limit})
        for ``migration_id``: all of them, or none.

        Returns None when the migration holds them (a repeated call takes
        nothing more), else the resource that has no free slot.  Two
        conductors counting at once cannot both take the last slot: the
        second one's insert breaks the primary key, and it is told the
        resource is full (a SlotRace).
        """
        slot = models.Slot
        trying = None  # (resource, limit) being inserted
        try:
            with self._writer() as session:
                held = set(session.scalars(sa.select(slot.resource).where(
                    slot.migration_id == migration_id)))
                free, full = free_slots(session, limits, held)
                if full is not None:
                    return full
                for resource, number in free:
                    trying = (resource, limits[resource])
                    session.add(slot(resource=resource, number=number,
                                     migration_id=migration_id))
                    session.flush()
        except sa.exc.IntegrityError:
            # Another conductor took that slot between our read and our
            # insert: as full as it gets, for now.
            return SlotRace(*trying)
        return None

    def slot_holders(self, resource):
        """The migrations holding a slot of ``resource``, by slot."""
        slot = models.Slot
        query = sa.select(slot.migration_id).where(
            slot.resource == resource).order_by(slot.number)
        with self._reader() as session:
            return list(session.scalars(query))


def free_slots(session, limits, held):
    """([(resource, its lowest free slot number)] for ``limits``
    ({resource: limit}) but the resources in ``held``, None), or (None,
    the first resource in name order without a free slot)."""
    slot = models.Slot
    free = []
    for resource, limit in sorted(limits.items()):
        if resource in held:
            continue
        taken = set(session.scalars(sa.select(slot.number).where(
            slot.resource == resource)))
        numbers = [n for n in range(limit) if n not in taken]
        if not numbers:
            return None, resource
        free.append((resource, numbers[0]))
    return free, None


def _claimable(m, conductor, now):
    """Ours, never claimed, released (its run ended: a retry made it
    queued again), or its claim expired."""
    return sa.or_(m.conductor == conductor, m.conductor.is_(None),
                  m.lease_until.is_(None), m.lease_until < now)


class SlotRace(str):
    """A resource (the string) whose free slot another conductor took
    between this one's count and its insert; ``limit``: its limit."""

    def __new__(cls, resource, limit):
        race = super().__new__(cls, resource)
        race.limit = limit
        return race


def _update_where(migration_id, expect):
    """An UPDATE of one migration that matches only while every column in
    ``expect`` still has its value (compare-and-set, fencing)."""
    query = sa.update(models.Migration).where(
        models.Migration.id == migration_id)
    for key, value in (expect or {}).items():
        query = query.where(getattr(models.Migration, key) == value)
    return query


class _UnitOfWork:
    """What enginefacade keeps a transaction's state on: one per block."""


def _on_engine_create(engine, sqlite_busy_timeout):
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", functools.partial(
            _sqlite_pragmas, busy_timeout=sqlite_busy_timeout))
    # After oslo.db's own handler, which it follows in the chain.
    event.listen(engine, "handle_error", _keep_integrity_errors,
                 retval=True)


def _keep_integrity_errors(context):
    """A constraint violation stays SQLAlchemy's IntegrityError.

    oslo.db turns it into DBDuplicateEntry, DBReferenceError or DBError;
    cs2os's callers (this module, db/plans.py) catch IntegrityError and
    then look at the rows, the same on every backend.  Deadlocks and lost
    connections stay oslo.db's (DBDeadlock is what the retry looks for).
    """
    if isinstance(context.sqlalchemy_exception, sa.exc.IntegrityError) \
            and isinstance(context.chained_exception, db_exc.DBError):
        return context.sqlalchemy_exception
    return None


def _sqlite_pragmas(dbapi_connection, _record, busy_timeout):
    # (oslo.db turns foreign keys on: sqlite_fk.)
    cursor = dbapi_connection.cursor()
    # WAL lets readers (API, list) go on while a migration writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # How long a writer waits for another one's lock before giving up.
    cursor.execute("PRAGMA busy_timeout=%d" % (busy_timeout * 1000))
    cursor.close()
