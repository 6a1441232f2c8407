"""The schema and the claim logic on SQLite, a real PostgreSQL and a real
MariaDB (MySQL)."""

import concurrent.futures
import datetime
import os
import uuid

import pytest
import sqlalchemy as sa
from alembic import autogenerate
from alembic import migration as alembic_migration

from cs2os_agent.api import progress as api_progress
from cs2os_agent.common import exception
from cs2os_agent.db import api
from cs2os_agent.db import migration
from cs2os_agent.db import models
from tools.testbed import mariadb
from tools.testbed import postgres

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0)


@pytest.fixture(scope="module")
def pg_cluster(workdir):
    cluster = postgres.PostgresCluster(workdir)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def mariadb_server(workdir):
    server = mariadb.MariaDBServer(workdir)
    server.start()
    yield server
    server.stop()


def empty_database(request, workdir):
    name = "t_%s" % uuid.uuid4().hex[:12]
    if request.param == "sqlite":
        url = "sqlite:///%s" % os.path.join(workdir, name + ".sqlite")
    elif request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").create_database(name)
    else:
        url = request.getfixturevalue("mariadb_server").create_database(
            name)
    return api.Database(url)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database(request, workdir):
    db = empty_database(request, workdir)
    migration.upgrade(db)
    yield db
    db.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_at_0004(request, workdir):
    """A database as the release before progress_step left it."""
    db = empty_database(request, workdir)
    migration.upgrade(db, "0004")
    yield db
    db.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_at_0003(request, workdir):
    """A database as the release before the target project left it."""
    db = empty_database(request, workdir)
    migration.upgrade(db, "0003")
    yield db
    db.engine.dispose()


def test_migrations_build_exactly_the_models(database):
    assert migration.current_version(database) == migration.head_version()
    with database.engine.connect() as connection:
        context = alembic_migration.MigrationContext.configure(connection)
        diff = autogenerate.compare_metadata(context, models.Base.metadata)
    assert diff == []


def test_only_one_of_many_conductors_wins_a_claim(database):
    database.create_migration({
        "id": "contended", "source_ref": "vm", "state": "queued",
        "step": "validate", "options": {}, "source": {}, "resources": {},
        "result": {}})
    until = NOW + datetime.timedelta(minutes=5)

    def claim(n):
        return database.claim("contended", "conductor-%d" % n, NOW, until)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        epochs = list(pool.map(claim, range(8)))
    # One claim, at epoch 1; the others got None.
    assert sorted(epochs, key=str) == [1] + [None] * 7
    winner = "conductor-%d" % epochs.index(1)
    record = database.get_migration("contended")
    assert (record["conductor"], record["lease_epoch"]) == (winner, 1)


def test_a_taken_over_claim_is_fenced_in_the_update_itself(database):
    database.create_migration({
        "id": "fenced", "source_ref": "vm", "state": "running",
        "step": "sync", "options": {}, "source": {}, "resources": {},
        "result": {}})
    later = NOW + datetime.timedelta(minutes=5)
    assert database.claim("fenced", "c1", NOW, NOW) == 1
    # c1's lease lapsed; c2 takes over.
    assert database.claim("fenced", "c2", later, later) == 2
    stale = {"conductor": "c1", "lease_epoch": 1}
    assert database.update_migration("fenced", {"step": "swap"},
                                     expect=stale) is None
    assert not database.add_event("fenced", "swap", "info", "x",
                                  expect=stale)
    assert not database.renew("fenced", "c1", 1, later)
    record = database.get_migration("fenced")
    assert (record["step"], record["events"]) == ("sync", [])
    assert database.renew("fenced", "c2", 2, later)


def test_one_active_migration_per_vm(database):
    def create(n):
        try:
            return database.create_migration({
                "id": "m-%d" % n, "source_ref": "ref-%d" % n,
                "state": "queued", "step": "validate", "options": {},
                "source": {}, "resources": {}, "result": {},
                "active_source": "vm-1"})["id"]
        except exception.MigrationConflict as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    (winner,) = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if not isinstance(r, str)]
    assert len(refused) == 7
    assert all(winner in str(r) for r in refused)
    # Final: the VM is free again, and the next one may take it.
    database.update_migration(winner, {"state": "succeeded"})
    assert database.get_migration(winner)["active_source"] is None
    assert create(9) == "m-9"


def test_json_columns_round_trip(database):
    database.create_migration({
        "id": "j", "source_ref": "vm", "state": "queued", "step": "validate",
        "options": {}, "source": {"nics": [{"mac": "fa:16:3e:00:00:01"}]},
        "resources": {"image_id": "i"}, "result": {"n": 1}})
    database.update_migration("j", {"bytes_total": 2 ** 40})
    row = database.get_migration("j")
    assert row["source"]["nics"][0]["mac"] == "fa:16:3e:00:00:01"
    assert row["bytes_total"] == 2 ** 40


def test_0004_adds_the_target_project_to_existing_migrations(
        database_at_0003):
    db = database_at_0003
    assert migration.current_version(db) == "0003"
    columns = {c["name"] for c in sa.inspect(db.engine).get_columns(
        "migrations")}
    assert "target_project_id" not in columns
    # Rows written before 0004 (the model's table, without the new
    # column: it has no default, so the INSERT does not name it).
    with db.engine.begin() as connection:
        for n in range(2):
            connection.execute(sa.insert(models.Migration.__table__).values(
                id="old-%d" % n, source_ref="vm-%d" % n, state="failed",
                step="validate", options={}, source={}, resources={},
                result={}, project_id="ops"))
    migration.upgrade(db)
    assert migration.current_version(db) == migration.head_version()
    # Not resolved: NULL until the conductor resolves it; only admins
    # see such a migration meanwhile.
    assert db.get_migration("old-0")["target_project_id"] is None
    indexes = {i["name"]: i for i in sa.inspect(db.engine).get_indexes(
        "migrations")}
    index = indexes["ix_migrations_target_project_id"]
    assert (index["column_names"], bool(index["unique"])) == (
        ["target_project_id"], False)
    db.update_migration("old-1", {"target_project_id": "8f2c" * 16})
    assert [m["id"] for m in db.list_migrations(
        {"target_project_id": "8f2c" * 16})] == ["old-1"]
    assert db.list_migrations({"target_project_id": "other"}) == []


def test_0005_adds_which_step_the_progress_counts(database_at_0004):
    db = database_at_0004
    with db.engine.begin() as connection:
        connection.execute(sa.insert(models.Migration.__table__).values(
            id="old", source_ref="vm", state="running", step="boot",
            options={}, source={}, resources={}, result={},
            project_id="ops", bytes_done=7, bytes_total=7))
    migration.upgrade(db)
    assert migration.current_version(db) == migration.head_version()
    old = db.get_migration("old")
    # NULL: the API shows such a record's bytes as it always did.
    assert old["progress_step"] is None
    assert api_progress.view(old)["bytes_done"] == 7
    db.update_migration("old", {"progress_step": "image"})
    assert "bytes_done" not in api_progress.view(db.get_migration("old"))


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_at_0008(request, workdir):
    """A database as the release before bytes_moved left it."""
    db = empty_database(request, workdir)
    migration.upgrade(db, "0008")
    yield db
    db.engine.dispose()


def test_0009_adds_bytes_moved_filled_in_from_each_result(
        database_at_0008):
    db = database_at_0008
    # Rows as the release before wrote them: a cold migration with two
    # data disks, a warm one (its sync staged what the mirror moved: not
    # counted again), one that failed before any copy.
    cold = {"template_bytes_moved": 2**33, "sync": {"bytes_copied": 3},
            "data_disks": [{"bytes_copied": 2**32}, {"bytes_copied": 5}]}
    warm = {"template_bytes_moved": 0, "mirror": {"bytes": 700},
            "sync": {"bytes_copied": 690,
                     "source": {"transport": "mirror"}}}
    rows = {"cold": (cold, 2**33 + 2**32 + 8), "warm": (warm, 700),
            "early": ({}, 0)}
    # (The model's table: bytes_moved has no default, so the INSERT does
    # not name it.)
    with db.engine.begin() as connection:
        for mid, (result, _moved) in rows.items():
            connection.execute(sa.insert(models.Migration.__table__).values(
                id=mid, source_ref="vm-" + mid, state="failed",
                step="validate", options={}, source={}, resources={},
                result=result, project_id="ops", bytes_done=5))
    migration.upgrade(db)
    assert migration.current_version(db) == migration.head_version()
    assert {mid: db.get_migration(mid)["bytes_moved"] for mid in rows} == {
        mid: moved for mid, (_result, moved) in rows.items()}
    column = {c["name"]: c for c in sa.inspect(db.engine).get_columns(
        "migrations")}["bytes_moved"]
    assert column["nullable"] is True
    # A later write of the result writes it again, from the whole result.
    db.update_migration("early", {"result": dict(cold, sync={
        "bytes_copied": 2**40})})
    assert db.get_migration("early")["bytes_moved"] == \
        2**33 + 2**32 + 5 + 2**40
