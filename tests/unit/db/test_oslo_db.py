"""[database] through oslo.db on a real SQLite file: the options reach the
engine, a write refused with a deadlock runs again whole, a constraint
violation stays SQLAlchemy's IntegrityError.  On MariaDB and PostgreSQL:
tests/functional/test_database_oslo_db.py."""

import datetime
import sqlite3
import time
import types

import pytest
import sqlalchemy as sa
from oslo_config import cfg
from oslo_db import api as oslo_db_api
from oslo_db import exception as db_exc
from sqlalchemy import event

from cs2os_agent import conf
from cs2os_agent.conf import database as database_conf
from cs2os_agent.db import api
from cs2os_agent.db import models

CONF = conf.CONF
NOW = datetime.datetime(2026, 11, 26, 12, 0, 0)
LATER = NOW + datetime.timedelta(minutes=2)


@pytest.fixture
def slept(monkeypatch):
    """The retries' sleeps, recorded instead of slept."""
    naps = []
    # oslo_db.api's own time module only: oslo.db yields with sleep(0)
    # whenever a connection goes back to the pool.
    monkeypatch.setattr(oslo_db_api, "time", types.SimpleNamespace(
        sleep=naps.append))
    return naps


@pytest.fixture
def override():
    """override(name, value): a [database] option of the global CONF (the
    one oslo.db's transaction context reads), for this test only."""
    names = []

    def set_(name, value):
        CONF.set_override(name, value, group="database")
        names.append(name)

    yield set_
    for name in names:
        CONF.clear_override(name, group="database")


class FailFirst:
    """Raise ``exc`` from the first ``times`` statements starting with
    ``verb`` on ``db``'s engine; count every such statement."""

    def __init__(self, db, verb, exc, times=1):
        self.verb, self.exc, self.times, self.seen = verb, exc, times, 0
        event.listen(db.engine, "before_cursor_execute", self)

    def __call__(self, conn, cursor, statement, *_args):
        if statement.lstrip().upper().startswith(self.verb):
            self.seen += 1
            if self.seen <= self.times:
                raise self.exc


def _sqlite_error(message):
    """What SQLAlchemy makes of the driver's error (cursor.execute's)."""
    return sa.exc.OperationalError("statement", {},
                                   sqlite3.OperationalError(message))


def _new(db, mid="m1"):
    return db.create_migration({
        "id": mid, "source_ref": "vm-" + mid, "state": "queued",
        "step": "validate", "options": {}, "source": {}, "resources": {},
        "result": {}})


def test_a_deadlocked_claim_runs_again_whole(db, slept):
    _new(db)
    failing = FailFirst(db, "UPDATE", db_exc.DBDeadlock())
    # Epoch 1, not 2: the refused attempt's increment was rolled back.
    assert db.claim("m1", "c1", NOW, LATER) == 1
    assert failing.seen == 2 and len(slept) == 1
    record = db.get_migration("m1")
    assert (record["conductor"], record["lease_epoch"]) == ("c1", 1)


def test_a_busy_sqlite_write_is_retried_like_a_deadlock(db, slept):
    _new(db)
    failing = FailFirst(db, "INSERT", _sqlite_error("database is locked"),
                        times=2)
    assert db.add_event("m1", "validate", "info", "once") is True
    assert failing.seen == 3 and len(slept) == 2
    assert [e["message"] for e in db.get_migration("m1")["events"]] == \
        ["once"]


def test_retries_end_with_the_deadlock(db, slept):
    _new(db)
    failing = FailFirst(db, "UPDATE", db_exc.DBDeadlock(), times=100)
    with pytest.raises(db_exc.DBDeadlock):
        db.update_migration("m1", {"step": "boot"})
    assert failing.seen == 6  # the first attempt and 5 retries
    assert db.get_migration("m1")["step"] == "validate"


def test_other_errors_are_not_retried(db, slept):
    _new(db)
    failing = FailFirst(db, "UPDATE", _sqlite_error("disk I/O error"),
                        times=100)
    with pytest.raises(sa.exc.OperationalError, match="disk I/O error"):
        db.renew("m1", "c1", 1, LATER)
    assert (failing.seen, slept) == (1, [])


def test_a_constraint_violation_stays_sqlalchemys(db):
    """oslo.db would make it DBDuplicateEntry; callers catch
    IntegrityError (db/plans.py) and cs2os's own errors come out."""
    _new(db, "m1")
    _new(db, "m2")
    assert db.acquire_slots("m1", {"kvm:h1": 1}) is None
    with pytest.raises(sa.exc.IntegrityError):
        with db._session.begin() as session:
            session.add(models.Slot(resource="kvm:h1", number=0,
                                    migration_id="m2"))
    with pytest.raises(sa.exc.IntegrityError):  # NOT NULL: a DBError
        with db._session.begin() as session:
            session.add(models.Slot(resource="kvm:h1", number=1))
    assert db.slot_holders("kvm:h1") == ["m1"]


def test_the_options_reach_the_engine(tmp_path, override):
    override("connection_recycle_time", 77)
    override("sqlite_synchronous", False)
    db = api.Database("sqlite:///%s" % (tmp_path / "o.sqlite"),
                      sqlite_busy_timeout=7)
    with db.engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 7000
        assert pragma("PRAGMA synchronous").scalar() == 0
    assert db.engine.pool._recycle == 77
    db.engine.dispose()


def test_pool_options_on_a_server_database(override):
    override("max_pool_size", 3)
    override("max_overflow", 4)
    override("pool_timeout", 9)
    db = api.Database("postgresql+psycopg2://cs2os@127.0.0.1:9/cs2os")
    pool = db.engine.pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 4, 9)


def test_without_waiting_a_missing_database_fails_at_once(override):
    override("max_retries", 5)
    override("retry_interval", 10)
    started = time.monotonic()
    db = api.Database("mysql+pymysql://cs2os:pw@127.0.0.1:9/cs2os")
    with pytest.raises(db_exc.DBConnectionError):
        db.get_migration("m1")
    assert time.monotonic() - started < 5


def test_the_conductor_waits_as_max_retries_says(override, caplog):
    override("max_retries", 3)
    override("retry_interval", 0)
    with pytest.raises(db_exc.DBConnectionError):
        api.Database("mysql+pymysql://cs2os:pw@127.0.0.1:9/cs2os",
                     wait_for_database=True)
    assert caplog.text.count("SQL connection failed") == 3


def test_the_database_group_is_oslo_dbs_with_cs2os_defaults():
    opts = cfg.ConfigOpts()
    for module in conf.ALL_MODULES:
        module.register_opts(opts)
    opts([], default_config_files=[])
    group = opts.database
    assert group.connection == database_conf.DEFAULT_CONNECTION
    assert (group.sqlite_busy_timeout, group.max_pool_size,
            group.mysql_sql_mode, group.max_retries) == \
        (30, 5, "TRADITIONAL", 10)
