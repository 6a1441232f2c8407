"""A migration's record from a database server (MariaDB, PostgreSQL), in
the shape invariants.read_record gives from a SQLite file: for the fault
tests whose conductors share one database (several conductors need a
server: a SQLite file has one conductor, db/sqlite_owner.py)."""

import datetime
import functools

import sqlalchemy as sa

from cs2os_agent.db import models

_JSON = ("source", "resources", "result", "options")


def is_url(db):
    return "://" in db


@functools.cache
def _engine(url):
    # A connection per read: each read sees what is committed by then.
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _plain(value):
    # As SQLite stores a DateTime: text.
    return str(value) if isinstance(value, datetime.datetime) else value


def read_record(url, migration_id, events=True):
    """The migration's row as a dict, or None (see invariants.read_record).

    Read-only, so it works while the conductors are dead or paused."""
    migrations = models.Migration.__table__
    event_table = models.MigrationEvent.__table__
    with _engine(url).connect() as conn:
        row = conn.execute(sa.select(migrations).where(
            migrations.c.id == migration_id)).mappings().first()
        if row is None:
            return None
        record = {key: _plain(value) for key, value in row.items()}
        for key in _JSON:
            record[key] = record.get(key) or {}
        record["committed"] = bool(record.get("committed"))
        if events:
            query = sa.select(
                event_table.c.created_at, event_table.c.step,
                event_table.c.kind, event_table.c.message,
            ).where(event_table.c.migration_id == migration_id).order_by(
                event_table.c.id)
            record["events"] = [
                {key: _plain(value) for key, value in e.items()}
                for e in conn.execute(query).mappings()]
        return record
