"""Shared queued work (conductor/engine.py): an engine claims only while a
worker is free, in order (resumes, then oldest, a plan's in plan order),
leaves the rest queued and unclaimed for any conductor, and says when its
workers keep it below a [conductor] max_* limit.  Real SQLite; the flow
is replaced by one that waits until released."""

import threading
import types

from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor.flow import runner
from cs2os_agent.db import api
from tests.unit.conductor.flow.script import new_queued_migration


def _engine(db, name, workers, monkeypatch):
    release = threading.Event()
    ran = []

    def run(ctx):
        ran.append(ctx.migration["id"])
        release.wait(10)
        ctx.db.update_migration(ctx.migration["id"], {"state": "succeeded"})
    monkeypatch.setattr(runner, "run", run)

    def make_context(migration, owner):
        return types.SimpleNamespace(migration=migration, owner=owner,
                                     db=db, request_stop=lambda: None)
    return (conductor_engine.Engine(db, name, workers, 60, make_context),
            release, ran)


def test_it_claims_only_as_many_as_it_has_free_workers(db, monkeypatch):
    for n in range(3):
        new_queued_migration(db, "m%d" % n)
    eng, release, _ = _engine(db, "c1", 2, monkeypatch)
    try:
        eng.adopt()
        claimed = {m["id"]: m["conductor"] for m in db.list_migrations()}
        assert claimed == {"m0": "c1", "m1": "c1", "m2": None}
        # A submit while both workers are busy leaves it to anybody.
        assert eng.submit("m2") is False
        # Another conductor with a free worker takes it, exactly once.
        other, other_release, _ = _engine(db, "c2", 1, monkeypatch)
        other.adopt()
        other.adopt()
        record = db.get_migration("m2")
        assert (record["conductor"], record["lease_epoch"]) == ("c2", 1)
        other_release.set()
        other._pool.shutdown(wait=True)
    finally:
        release.set()
        eng._pool.shutdown(wait=True)
    assert [m["lease_epoch"] for m in db.list_migrations()] == [1, 1, 1]


def test_it_takes_resumes_first_then_plan_order(db, monkeypatch):
    for position, mid in ((2, "p-third"), (0, "p-first"), (1, "p-second")):
        new_queued_migration(db, mid, plan_id=None,
                             options={"plan_position": position})
    new_queued_migration(db, "orphan", state="running", conductor="dead",
                         lease_until=api.models.utcnow().replace(year=2000))
    rows = db.claim_candidates("c1", api.models.utcnow(), ("queued",
                                                           "running"))
    same = rows[0]["created_at"]
    for row in rows:
        row["created_at"] = same  # as MariaDB's whole seconds may have it
    rows.sort(key=conductor_engine._claim_order)
    assert [r["id"] for r in rows] == ["orphan", "p-first", "p-second",
                                       "p-third"]


def test_a_finished_migration_retried_is_anybodys(db, monkeypatch):
    new_queued_migration(db, "m1")
    eng, release, _ = _engine(db, "c1", 1, monkeypatch)
    release.set()
    eng.adopt()
    eng._pool.shutdown(wait=True)
    assert db.get_migration("m1")["lease_until"] is None
    # Ended and released: no conductor may claim it ...
    assert db.claim("m1", "c2", api.models.utcnow(),
                    api.models.utcnow()) is None
    # ... until a retry makes it queued again: then any conductor.
    db.update_migration("m1", {"state": "queued"})
    assert db.claim("m1", "c2", api.models.utcnow(),
                    api.models.utcnow()) == 2


def test_workers_below_a_limit_are_explained():
    options = types.SimpleNamespace(max_in_flight=24, max_per_compute_host=3,
                                    max_per_kvm_host=0, max_per_pool=4)
    said = conductor_engine.capacity_warnings(options, 4)
    assert said == [
        "[conductor] workers = 4 is below max_in_flight = 24: this "
        "conductor runs at most 4 migrations at once, those waiting for a "
        "slot or a cutover window included; more in flight needs more "
        "conductors on the database or a higher workers"]
    assert conductor_engine.capacity_warnings(options, 24) == []
