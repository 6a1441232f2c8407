"""Plans in the database (alembic 0007, db/plans.py) on SQLite, a real
PostgreSQL and a real MariaDB."""


import pytest
import sqlalchemy as sa

from cs2os_agent.db import migration
from cs2os_agent.db import models
from cs2os_agent.db import plans as plan_db

# The engines and the fixture that builds a database at head, per engine.
from tests.functional import test_database
from tests.functional.test_database import database  # noqa: F401
from tests.functional.test_database import mariadb_server  # noqa: F401
from tests.functional.test_database import pg_cluster  # noqa: F401


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_at_0006(request, workdir):
    """A database as the release before plans left it."""
    db = test_database.empty_database(request, workdir)
    migration.upgrade(db, "0006")
    yield db
    db.engine.dispose()


def test_0007_adds_plans_and_the_plan_of_a_migration(database_at_0006):
    db = database_at_0006
    with db.engine.begin() as connection:
        connection.execute(sa.insert(models.Migration.__table__).values(
            id="old", source_ref="vm", state="succeeded", step="done",
            options={}, source={}, resources={}, result={},
            project_id="ops"))
    migration.upgrade(db)
    assert migration.current_version(db) == migration.head_version()
    # An earlier migration belongs to no plan.
    assert db.get_migration("old")["plan_id"] is None
    assert db.list_migrations({"plan_id": "p-1"}) == []
    db.create_migration({
        "id": "new", "source_ref": "vm-2", "state": "queued",
        "step": "validate", "options": {}, "source": {}, "resources": {},
        "result": {}, "project_id": "ops", "plan_id": "p-1"})
    assert [m["id"] for m in db.list_migrations({"plan_id": "p-1"})] == [
        "new"]


def test_0008_adds_limits_an_event_log_and_waiting_for(database_at_0006):
    db = database_at_0006
    migration.upgrade(db, "0007")
    plan_db_values = {"id": "p-old", "name": "w", "state": "running",
                      "defaults": {}, "items": []}
    with db.engine.begin() as connection:
        connection.execute(sa.insert(models.Plan.__table__).values(
            created_at=models.utcnow(), updated_at=models.utcnow(),
            **plan_db_values))
    migration.upgrade(db, "0008")
    assert plan_db.get(db, "p-old")["limits"] is None
    assert plan_db.add_event(db, "p-old", "ended", "m ended", dedupe="k")
    # A key the plan has already: recorded once.
    assert plan_db.add_event(db, "p-old", "ended", "m ended",
                             dedupe="k") is False
    assert [e["message"] for e in plan_db.events(db, "p-old")] == [
        "m ended"]
    plan_db.delete(db, "p-old")
    assert plan_db.events(db, "p-old") == []


def test_a_plan_round_trips_and_moves_by_compare_and_set(database):  # noqa: F811
    db = database
    items = [{"vm": "web-1", "vm_id": "a" * 36, "overrides": {
        "flavor": "m1.small", "networks": {"guest": "private"}},
        "migration_id": None, "preflight": {"ok": True, "findings": []}}]
    plan = plan_db.create(db, {
        "id": "p-1", "name": "wave-1", "state": "draft", "user_id": "u",
        "project_id": "ops", "defaults": {"host": "cmp1"},
        "selector": {"tag": "wave=1"}, "items": items})
    # (MariaDB's DATETIME keeps whole seconds: the timestamps aside.)
    stamps = ("created_at", "updated_at")
    assert {k: v for k, v in plan_db.get(db, "p-1").items()
            if k not in stamps} == {k: v for k, v in plan.items()
                                    if k not in stamps}
    assert (plan["items"], plan["selector"]) == (items, {"tag": "wave=1"})
    assert plan_db.update(db, "p-1", {"state": "running"},
                          expect_state="draft")["state"] == "running"
    # A second start loses.
    assert plan_db.update(db, "p-1", {"state": "running"},
                          expect_state="draft") is None
    assert [p["id"] for p in plan_db.list_(db, {"state": "running"})] == [
        "p-1"]
    plan_db.delete(db, "p-1")
    with pytest.raises(plan_db.PlanNotFoundError):
        plan_db.get(db, "p-1")
