"""Migrations placed on a Nova host aggregate, on a real PostgreSQL.

Admission picks each migration's host among the aggregate's with its
slots, in one transaction (db/placement.py).  With [conductor]
max_per_compute_host = 1 on a 3-host aggregate:

- four "conductors" (own engines and connections, threads) racing to
  place 18 migrations never put two on one host at once, use all three
  hosts, and a sampler reading slots and records in one statement never
  sees a running migration's target_host and its compute slot disagree;
- two real conductor engines in this process (engine, manager, plans,
  FlowContext, admission: the shipped code; only the clouds are fake:
  steps that sleep and record on which host they ran) run a 9-VM plan
  whose defaults name the aggregate: never two at work on one host, all
  three used, every one succeeded, and the waiting event names the
  aggregate and its limit.
"""

import datetime
import random
import threading
import time
import types
import uuid

import pytest
import sqlalchemy as sa

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import manager
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import placement
from cs2os_agent.db import api
from cs2os_agent.db import migration as db_migration
from cs2os_agent.db import placement as placement_db
from tests.functional import plan_sim

# The PostgreSQL the database tests start (a fixture, taken by name).
from tests.functional.test_database import pg_cluster  # noqa: F401

HOSTS = ["agg-c1", "agg-c2", "agg-c3"]
WAVE = placement.Placement("wave-3", HOSTS, HOSTS, {})
VM = {"host": {"id": "kvm-1"}, "root_volume": {"storage": {"id": "p1"}}}


@pytest.fixture
def url(pg_cluster):  # noqa: F811
    url = pg_cluster.create_database("agg_%s" % uuid.uuid4().hex[:10])
    db = api.Database(url)
    db_migration.upgrade(db)
    db.engine.dispose()
    return url


def _new(db, mid):
    db.create_migration({
        "id": mid, "source_ref": "vm-" + mid, "state": "running",
        "step": "validate", "options": {"aggregate": "wave-3"},
        "source": {}, "resources": {}, "result": {}, "project_id": "ops",
        "conductor": "c", "lease_epoch": 1})


_SNAPSHOT = sa.text(
    "SELECT m.id, m.target_host, s.resource FROM migrations m "
    "LEFT JOIN slots s ON s.migration_id = m.id "
    "AND s.resource LIKE 'compute:%' WHERE m.state = 'running'")


def _sample(db, stop, seen, problems):
    """Until ``stop``: one statement (one snapshot) at a time, what each
    running migration's target_host and compute slot are."""
    while not stop.is_set():
        with db.engine.connect() as connection:
            rows = list(connection.execute(_SNAPSHOT))
        on = {}
        for mid, host, resource in rows:
            slot_host = resource[len("compute:"):] if resource else None
            if host != slot_host:
                problems.append((mid, host, resource))
            if host:
                on.setdefault(host, []).append(mid)
                seen.add(host)
        problems.extend(("two on", h, m) for h, m in on.items()
                        if len(m) > 1)
        time.sleep(0.002)


def test_racing_conductors_spread_over_the_aggregate(url):
    conductors = [api.Database(url) for _ in range(4)]
    mids = ["agg-%02d" % n for n in range(18)]
    for mid in mids:
        _new(conductors[0], mid)
    stop, seen, problems, errors = threading.Event(), set(), [], []
    placed = {}
    lock = threading.Lock()

    def limits_for(host):
        return {"compute:%s" % host: 1}

    def run(db, mine):
        rng = random.Random(mine[0])
        try:
            for mid in mine:
                while True:
                    try:
                        host = placement_db.acquire(
                            db, mid, HOSTS, limits_for,
                            expect={"conductor": "c", "lease_epoch": 1})
                    except placement_db.AllFull:
                        host = None
                    if host and not isinstance(host, api.SlotRace):
                        break
                    time.sleep(rng.uniform(0.001, 0.005))
                with lock:
                    placed.setdefault(host, []).append(mid)
                time.sleep(rng.uniform(0.005, 0.03))
                db.update_migration(mid, {"state": "succeeded"})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    sampler_db = api.Database(url)
    sampler = threading.Thread(target=_sample,
                               args=(sampler_db, stop, seen, problems))
    sampler.start()
    threads = [threading.Thread(target=run, args=(db, mids[n::4]))
               for n, db in enumerate(conductors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    sampler.join(30)
    for db in conductors + [sampler_db]:
        db.engine.dispose()
    assert errors == []
    assert problems == []
    assert sorted(m for ms in placed.values() for m in ms) == mids
    # Every host took some, and the sampler saw each at work.
    assert sorted(placed) == HOSTS and seen == set(HOSTS)
    db = api.Database(url)
    assert {m["target_host"] for m in db.list_migrations()} == set(HOSTS)
    assert all(db.slot_holders("compute:%s" % h) == [] for h in HOSTS)
    db.engine.dispose()


class Flow:
    """Cold-flow step names; validate places the migration on WAVE
    through the real admission, the others sleep and record where."""

    def __init__(self):
        self.lock = threading.Lock()
        self.work = {}  # host -> [(start, end)]

    def install(self, monkeypatch):
        steps = [("validate", self.validate)] + [
            (name, self.step) for name, _ in cold.STEPS[1:]]
        monkeypatch.setattr(cold, "STEPS", steps)
        monkeypatch.setattr(cold, "ROLLBACK", [
            (name, lambda ctx: "nothing") for name, _ in cold.ROLLBACK])

    def validate(self, ctx):
        vm = {"id": ctx.migration["source_ref"], "name": "n"}
        ctx.save(source=dict(VM, **vm), source_vm_id=vm["id"],
                 active_source=vm["id"])
        admission.admit(ctx, VM, placement=WAVE)

    def step(self, ctx):
        start = time.monotonic()
        time.sleep(0.03)
        with self.lock:
            self.work.setdefault(ctx.migration["target_host"], []).append(
                (start, time.monotonic()))


def test_a_plan_on_an_aggregate_through_two_conductors(url, monkeypatch):
    flow = Flow()
    flow.install(monkeypatch)
    monkeypatch.setattr(admission, "POLL_SECONDS", 0.2)
    conf = types.SimpleNamespace(conductor=types.SimpleNamespace(
        lease_seconds=30, rollback_attempts=3, max_in_flight=0,
        max_per_compute_host=1, max_per_kvm_host=0, max_per_pool=0))
    clients = types.SimpleNamespace(
        admin_context=cs2os_context.get_admin_context())
    vms = {"pvm-%d" % n: {"id": "pvm-%d" % n, "name": "pvm-%d" % n}
           for n in range(9)}
    engines, dbs = [], []
    for n in range(2):
        db = api.Database(url)
        dbs.append(db)

        def make_context(migration, owner, db=db):
            return flow_context.FlowContext(migration, db, conf, clients,
                                            owner=owner)
        engines.append(conductor_engine.Engine(
            db, "agg-conductor-%d" % n, 4, 30, make_context))
    mgr = manager.ConductorManager(
        dbs[0], engines[0], find_vm=vms.__getitem__,
        preflight=lambda request: {
            "ok": True, "summary": "0 critical, 0 warnings", "findings": [],
            "plan": {"vm": vms[request["source"]]}},
        select_vms=lambda selector: list(vms.values()))
    ctxt = cs2os_context.RequestContext(user_id="u", project_id="ops")
    for engine in engines:
        engine.start()
    try:
        plan = mgr.create_plan(ctxt, {
            "name": "wave-3", "defaults": {"aggregate": "wave-3"},
            "vms": sorted(vms)})
        mgr.start_plan(ctxt, plan["id"])
        rows = plan_sim.wait_all_final(dbs[0], len(vms), timeout=120,
                                         interval=0.2)
    finally:
        for engine in engines:
            engine.stop()
    assert [r["state"] for r in rows] == ["succeeded"] * len(vms), [
        r["error"] for r in rows]
    assert {r["target_host"] for r in rows} == set(HOSTS)
    assert sorted(flow.work) == HOSTS
    # Never two at work on one host: by the steps' own intervals, and
    # by the records (placed .. final state, when its slot is freed).
    assert plan_sim.peaks(flow.work) == {h: 1 for h in HOSTS}
    assert plan_sim.peaks({h: _runs(dbs[0], h) for h in HOSTS}) == {
        h: 1 for h in HOSTS}
    ran = {r["id"]: r for r in (dbs[0].get_migration(r["id"])
                                for r in rows)}
    waited = [e["message"] for r in ran.values() for e in r["events"]
              if e["message"].startswith("waiting for a slot")]
    # Each wait names the aggregate: every host full, or (a later VM of
    # the plan) behind an earlier one waiting for it; the first kind at
    # least once.
    full = ("waiting for a slot: every usable host of host aggregate "
            "wave-3 is at its limit of 1 migrations in flight")
    behind = "waiting for a slot: aggregate:wave-3, after migration "
    assert any(m.startswith(full) for m in waited), waited
    assert all(m.startswith((full, behind)) for m in waited), waited
    for db in dbs:
        db.engine.dispose()


def _runs(db, host):
    """Each migration on ``host``: from its admission (placed) to its
    final state, as the records say."""
    runs = []
    for row in db.list_migrations({"target_host": host}):
        row = db.get_migration(row["id"])
        placed = [e for e in row["events"]
                  if e["message"].startswith("placed on host")]
        runs.append((_t(placed[0]["created_at"]), _t(row["finished_at"])))
    return runs


def _t(iso):
    return datetime.datetime.fromisoformat(iso).timestamp()
