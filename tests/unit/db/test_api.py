"""The migration records, on a real SQLite file (no process needed)."""

import datetime

import pytest

from cs2os_agent.common import exception
from cs2os_agent.db import migration

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0)
LATER = NOW + datetime.timedelta(minutes=2)


def record(db, n=0, **values):
    base = {"id": "m-%02d" % n, "source_ref": "vm-%d" % n,
            "state": "queued", "step": "validate", "options": {},
            "source": {}, "resources": {}, "result": {},
            "created_at": NOW + datetime.timedelta(seconds=n)}
    base.update(values)
    return db.create_migration(base)


def test_schema_is_at_head_after_sync(db):
    assert migration.current_version(db) == migration.head_version()


def test_create_and_get_round_trip(db):
    created = record(db, resources={"image_id": "i1"})
    got = db.get_migration("m-00")
    assert got["resources"] == {"image_id": "i1"}
    assert got["state"] == "queued" and got["events"] == []
    assert created["id"] == got["id"]
    assert got["delete_source"] is False and got["bytes_done"] == 0


def test_missing_migration(db):
    with pytest.raises(exception.MigrationNotFound, match="nope"):
        db.get_migration("nope")


def test_list_newest_first_with_filters_and_pages(db):
    for n in range(5):
        record(db, n, state="failed" if n % 2 else "queued")
    assert [m["id"] for m in db.list_migrations()] == [
        "m-04", "m-03", "m-02", "m-01", "m-00"]
    assert [m["id"] for m in db.list_migrations({"state": "failed"})] == [
        "m-03", "m-01"]
    page1 = db.list_migrations(limit=2)
    page2 = db.list_migrations(limit=2, marker=page1[-1]["id"])
    assert [m["id"] for m in page1 + page2] == [
        "m-04", "m-03", "m-02", "m-01"]
    with pytest.raises(exception.Invalid, match="unknown filter"):
        db.list_migrations({"colour": "red"})


def test_update_with_expectation_is_compare_and_swap(db):
    record(db)
    assert db.update_migration("m-00", {"state": "running"},
                               expect={"state": "queued"})["state"] == \
        "running"
    assert db.update_migration("m-00", {"state": "cancelled"},
                               expect={"state": "queued"}) is None
    assert db.get_migration("m-00")["state"] == "running"


def test_events_are_kept_in_order(db):
    record(db)
    db.add_event("m-00", "validate", "info", "done")
    db.add_event("m-00", "image", "error", "boom")
    events = db.get_migration("m-00")["events"]
    assert [(e["step"], e["kind"], e["message"]) for e in events] == [
        ("validate", "info", "done"), ("image", "error", "boom")]


def test_claims_and_expired_leases(db):
    record(db, 0)
    record(db, 1, state="succeeded")
    assert db.claimable("c1", NOW, ("queued",)) == ["m-00"]
    assert db.claim("m-00", "c1", NOW, LATER)
    # Another conductor may not take it while the lease holds ...
    assert not db.claim("m-00", "c2", NOW, LATER)
    assert db.claimable("c2", NOW, ("queued",)) == []
    # ... but may once it expired (c1 died).
    after = LATER + datetime.timedelta(seconds=1)
    assert db.claimable("c2", after, ("queued",)) == ["m-00"]
    assert db.claim("m-00", "c2", after, after + datetime.timedelta(1))
    assert db.get_migration("m-00")["conductor"] == "c2"


def test_list_filters_on_the_target_project(db):
    # The creator's project and the target project are two columns; a
    # migration whose target project is not resolved yet has none.
    record(db, 0, project_id="ops", target_project_id="tenant-a")
    record(db, 1, project_id="ops", target_project_id="tenant-b")
    record(db, 2, project_id="ops")
    record(db, 3, project_id="tenant-a", target_project_id="tenant-a")
    assert [m["id"] for m in db.list_migrations(
        {"target_project_id": "tenant-a"})] == ["m-03", "m-00"]
    assert [m["id"] for m in db.list_migrations(
        {"target_project_id": "tenant-a", "project_id": "ops"})] == ["m-00"]
    assert db.get_migration("m-02")["target_project_id"] is None
    db.update_migration("m-02", {"target_project_id": "tenant-b"})
    assert [m["id"] for m in db.list_migrations(
        {"target_project_id": "tenant-b"})] == ["m-02", "m-01"]
