"""[database] through oslo.db on a real MariaDB and PostgreSQL: the
options reach the server's sessions and the pool, and a real deadlock
(two transactions inserting slots in opposite orders) is retried whole."""

import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from oslo_db import exception as db_exc
from sqlalchemy import event

from cs2os_agent import conf
from cs2os_agent.db import api
from cs2os_agent.db import migration
from cs2os_agent.db import models

# The servers, per engine.
from tests.functional.test_database import mariadb_server  # noqa: F401
from tests.functional.test_database import pg_cluster  # noqa: F401

CONF = conf.CONF
LOCK_WAITS = {
    "mysql": "SELECT COUNT(*) FROM information_schema.innodb_trx "
             "WHERE trx_state = 'LOCK WAIT'",
    "postgresql": "SELECT COUNT(*) FROM pg_locks WHERE NOT granted",
}


@pytest.fixture
def override():
    names = []

    def set_(name, value):
        CONF.set_override(name, value, group="database")
        names.append(name)

    yield set_
    for name in names:
        CONF.clear_override(name, group="database")


def _url(request, backend):
    server = request.getfixturevalue(
        "mariadb_server" if backend == "mysql" else "pg_cluster")
    return server.create_database("o_%s" % uuid.uuid4().hex[:12])


@pytest.mark.parametrize("mode,expected", [
    ("TRADITIONAL", {"STRICT_ALL_TABLES", "STRICT_TRANS_TABLES",
                     "NO_ZERO_DATE", "TRADITIONAL"}),
    ("ANSI_QUOTES", {"ANSI_QUOTES"}),
])
def test_mysql_sql_mode_is_every_sessions(request, override, mode,
                                          expected):
    override("mysql_sql_mode", mode)
    db = api.Database(_url(request, "mysql"))
    try:
        with db.engine.connect() as connection:
            got = set(connection.exec_driver_sql(
                "SELECT @@SESSION.sql_mode").scalar().split(","))
    finally:
        db.engine.dispose()
    assert expected <= got, got
    if mode == "ANSI_QUOTES":
        assert "STRICT_ALL_TABLES" not in got


def test_the_pool_holds_what_max_pool_size_says(request, override):
    override("max_pool_size", 2)
    override("max_overflow", 0)
    override("pool_timeout", 1)
    db = api.Database(_url(request, "postgresql"))
    held = [db.engine.connect() for _ in range(2)]
    try:
        started = time.monotonic()
        with pytest.raises(sa.exc.TimeoutError):
            db.engine.connect()
        waited = time.monotonic() - started
    finally:
        for connection in held:
            connection.close()
    # Back in the pool: the next one gets one at once.
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    db.engine.dispose()
    assert 0.9 < waited < 5, waited


def _new(db, mid):
    db.create_migration({
        "id": mid, "source_ref": "vm-" + mid, "state": "running",
        "step": "validate", "options": {}, "source": {}, "resources": {},
        "result": {}})


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_a_real_deadlock_is_retried_whole(request, backend, caplog):
    """acquire_slots takes a then b; another transaction (heavier, so the
    server rolls ours back) took b and then asks for a: the server breaks
    the cycle, oslo.db says DBDeadlock, the retry takes both slots."""
    db = api.Database(_url(request, backend))
    migration.upgrade(db)
    _new(db, "ours")
    _new(db, "theirs")
    deadlocks = []

    def record(context):
        if isinstance(context.chained_exception, db_exc.DBDeadlock):
            deadlocks.append(str(context.original_exception))

    event.listen(db.engine, "handle_error", record)
    other = sa.create_engine(db.engine.url)
    theirs = other.connect()
    outcome = []
    caplog.set_level("DEBUG", logger="oslo_db.api")
    try:
        txn = theirs.begin()
        # Weight: InnoDB rolls back the transaction that changed fewer rows.
        theirs.execute(sa.insert(models.MigrationEvent), [
            {"migration_id": "theirs", "step": "x", "kind": "info",
             "message": str(n)} for n in range(50)])
        theirs.execute(_slot("b"))
        worker = threading.Thread(target=lambda: outcome.append(
            db.acquire_slots("ours", {"a": 1, "b": 1})))
        worker.start()
        _wait_for_a_lock_wait(other, backend)  # ours holds a, waits for b
        theirs.execute(_slot("a"))
        # Ours was rolled back (theirs got a); let go of both.
        txn.rollback()
        worker.join(60)
    finally:
        theirs.close()
        other.dispose()
    assert outcome == [None], outcome
    assert (db.slot_holders("a"), db.slot_holders("b")) == (["ours"],
                                                            ["ours"])
    assert len(deadlocks) == 1, deadlocks
    assert ("1213" if backend == "mysql" else "deadlock detected") \
        in deadlocks[0]
    assert "Performing DB retry for function" in caplog.text
    db.engine.dispose()


def _slot(resource):
    return sa.insert(models.Slot).values(resource=resource, number=0,
                                         migration_id="theirs")


def _wait_for_a_lock_wait(engine, backend, timeout=30):
    deadline = time.monotonic() + timeout
    with engine.connect() as watcher:
        while watcher.exec_driver_sql(LOCK_WAITS[backend]).scalar() < 1:
            assert time.monotonic() < deadline, "no transaction waits"
            time.sleep(0.05)
            watcher.rollback()  # a fresh snapshot of the server's view
