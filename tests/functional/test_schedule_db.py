"""Start times and a plan's own limits across several conductors, on a
real SQLite, PostgreSQL and MariaDB: each "conductor" has its own
Database (own connections) on the same URL, the real Engine, the real
admission (flow/admission.py) and slots; only the flow's steps are
replaced (a migration here only has to be run, once)."""

import datetime
import random
import threading
import time
import types

from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import schedule
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import runner
from cs2os_agent.db import api
from cs2os_agent.db import plans as plan_db

# The engines and the fixtures that build a database at head, per engine.
from tests.functional.test_database import database  # noqa: F401
from tests.functional.test_database import mariadb_server  # noqa: F401
from tests.functional.test_database import pg_cluster  # noqa: F401


def _new(db, mid, options=None, state="queued", plan_id=None):
    db.create_migration({
        "id": mid, "source_ref": "vm-%s" % mid, "state": state,
        "step": "validate", "options": options or {}, "source": {},
        "resources": {}, "result": {}, "project_id": "ops",
        "target_host": "cmp-1", "plan_id": plan_id})


def _url(database):  # noqa: F811
    return database.engine.url.render_as_string(hide_password=False)


def test_no_conductor_takes_a_migration_before_its_start_time(
        database, monkeypatch):  # noqa: F811
    # Whole seconds, as the record keeps it.
    start_at = schedule.parse_time(schedule.iso(
        schedule.now() + datetime.timedelta(seconds=4)), "start_at")
    _new(database, "timed", {"start_at": schedule.iso(start_at)})
    runs = []

    def run(ctx):
        runs.append((ctx.owner[0], schedule.now()))
        ctx.db.update_migration(ctx.migration["id"], {"state": "succeeded"})
    monkeypatch.setattr(runner, "run", run)

    def make_context(name, db):
        return lambda m, owner: types.SimpleNamespace(
            migration=m, owner=owner, db=db, request_stop=lambda: None)
    dbs = [api.Database(_url(database)) for _ in range(3)]
    engines = [conductor_engine.Engine(db, "c%d" % n, 2, 30,
                                       make_context("c%d" % n, db))
               for n, db in enumerate(dbs)]
    try:
        for eng in engines:
            # Every conductor is asked, and adopts: none claims it yet.
            assert eng.submit("timed") is False
            eng.adopt()
        record = database.get_migration("timed")
        assert (record["state"], record["conductor"],
                record["lease_epoch"]) == ("queued", None, 0)
        # The timers the submits set: one conductor runs it, once, then.
        deadline = time.monotonic() + 30
        while database.get_migration("timed")["state"] != "succeeded":
            assert time.monotonic() < deadline, runs
            time.sleep(0.2)
        time.sleep(1)
        assert len(runs) == 1, runs
        assert runs[0][1] >= start_at
    finally:
        for eng in engines:
            eng.stop()
        for db in dbs:
            db.engine.dispose()


class _Ctx:
    """What admission reads and writes of a flow's context."""

    def __init__(self, db, mid):
        self.db, self.id = db, mid
        self.migration = db.get_migration(mid)
        self.conf = types.SimpleNamespace(conductor=types.SimpleNamespace(
            max_in_flight=0, max_per_compute_host=0, max_per_kvm_host=0,
            max_per_pool=0))

    def guard(self):
        pass

    def save(self, **values):
        self.migration = self.db.update_migration(self.id, values)

    def event(self, step, message):
        self.db.add_event(self.id, step, "info", message)

    def check_cancelled(self, step):
        pass


def test_a_plan_limit_holds_across_conductors_and_starts_in_plan_order(
        database):  # noqa: F811
    """Four conductors, a plan of 12 migrations on one compute host with
    the plan's own limit of 3 (no [conductor] limit): never more than 3
    in flight, and those that wait get their slots in plan order."""
    plan_db.create(database, {
        "id": "plan-1", "name": "wave", "state": "running", "defaults": {},
        "items": [], "limits": {"max_per_compute_host": 3}})
    mids = ["m-%02d" % n for n in range(12)]
    for position, mid in enumerate(mids):
        _new(database, mid, {"plan_position": position}, state="running",
             plan_id="plan-1")
    resource = admission.plan_resource("plan-1", "compute:cmp-1")
    dbs = [api.Database(_url(database)) for _ in range(4)]
    lock = threading.Lock()
    order, peak, errors = [], [0], []

    def run(db, mid):
        try:
            admission.admit(_Ctx(db, mid), {}, poll=0.05)
            with lock:
                order.append(mid)
                peak[0] = max(peak[0], len(db.slot_holders(resource)))
            time.sleep(random.uniform(1.2, 1.5))
            db.update_migration(mid, {"state": "succeeded"})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for db in dbs:  # connected before the clock starts
        db.slot_holders(resource)
    threads = []
    for n, mid in enumerate(mids):
        thread = threading.Thread(target=run, args=(dbs[n % 4], mid))
        thread.start()
        threads.append(thread)
        time.sleep(0.15)  # each arrives, and waits, in plan order
    for thread in threads:
        thread.join(120)
    for db in dbs:
        db.engine.dispose()
    assert errors == []
    assert peak[0] == 3
    # Those that had to wait got their slots in plan order (who arrives
    # first to a free slot is the machine's scheduling, not the plan's).
    waited = [mid for mid in order if any(
        e["message"].startswith("waiting for a slot")
        for e in database.get_migration(mid)["events"])]
    assert len(waited) >= 6 and waited == sorted(waited), (order, waited)
    # Each waited on the record for the plan's resource, then cleared it.
    waited = database.get_migration("m-11")
    assert waited["waiting_for"] is None
    assert any("waiting for a slot: %s" % resource in e["message"]
               for e in waited["events"])
    assert database.slot_holders(resource) == []
