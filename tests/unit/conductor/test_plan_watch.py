"""A plan ends without anybody looking at it (conductor/plan_watch.py,
the engine's hook, plan_view.refresh): the conductor that ends a plan's
migration, or its periodic sweep, moves the plan to done and records
(and notifies) the ends and ``done`` once.

Real SQLite (``db``), the manager with a recording engine for the plan's
start, a real Engine whose flow is replaced by one that fails at once,
and a fake notifier (test_plan_notify.py).  No test here reads the plan
through get_plan/list_plans: that would catch it up itself.
"""

import logging
import threading
import time
import types

import pytest

from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import plan_view
from cs2os_agent.conductor import plan_watch
from cs2os_agent.conductor import plans
from cs2os_agent.conductor.flow import runner
from cs2os_agent.db import models
from cs2os_agent.db import plans as plan_db
from tests.unit.conductor.flow.script import new_queued_migration
from tests.unit.conductor.helpers import CTXT
from tests.unit.conductor.helpers import Agent
from tests.unit.conductor.helpers import Engine
from tests.unit.conductor.test_plan_notify import fake  # noqa: F401
from tests.unit.conductor.test_plans import _find
from tests.unit.conductor.test_plans import _preflight


@pytest.fixture
def notified(fake):  # noqa: F811
    """What the plans' notifier was given (FakeNotifier)."""
    return fake


@pytest.fixture
def pm(db):
    return manager.ConductorManager(db, Engine(), agent_api=Agent(),
                                    find_vm=_find, preflight=_preflight,
                                    select_vms=lambda selector: [])


def _started(pm, vms):
    plan = pm.create_plan(CTXT, {"name": "wave", "vms": vms})
    return pm.start_plan(CTXT, plan["id"])


def _fail(db, migration_id):
    db.update_migration(migration_id, {"state": "failed", "error": "boom",
                                       "finished_at": models.utcnow()})


def _kinds(db, plan_id):
    return [e["kind"] for e in plan_db.events(db, plan_id)]


def _engine(db, monkeypatch, workers=1, lease=60):
    """A real engine whose flow fails every migration at once."""
    def run(ctx):
        _fail(ctx.db, ctx.migration["id"])
    monkeypatch.setattr(runner, "run", run)

    def make_context(migration, owner):
        return types.SimpleNamespace(migration=migration, owner=owner,
                                     db=db, request_stop=lambda: None)
    return conductor_engine.Engine(db, "c1", workers, lease, make_context)


def test_the_engine_ending_a_plans_last_migration_ends_the_plan(
        pm, notified, monkeypatch):
    started = _started(pm, ["web-1", {"vm": "web-2", "overrides": {
        "flavor": "nope"}}])
    assert started["state"] == "running"
    migration_id = started["vms"][0]["migration_id"]
    eng = _engine(pm.db, monkeypatch)
    eng.adopt()
    eng._pool.shutdown(wait=True)
    assert pm.db.get_migration(migration_id)["state"] == "failed"
    assert plan_db.get(pm.db, started["id"])["state"] == "done"
    assert _kinds(pm.db, started["id"])[-2:] == ["ended", "done"]
    assert notified.kinds() == ["created", "validated", "started",
                                "migration_created", "skipped", "ended",
                                "done"]
    by_kind = {kind: (event, state)
               for _p, kind, event, state in notified.sent}
    assert by_kind["ended"][1] == "failed"
    assert by_kind["ended"][0]["migration_id"] == migration_id
    assert by_kind["done"][0]["counts"] == {"failed": 1, "skipped": 1}


def test_a_plan_with_migrations_left_stays_running(pm, notified,
                                                   monkeypatch):
    started = _started(pm, ["web-1", "db-1"])
    first, second = [r["migration_id"] for r in started["vms"]]
    _fail(pm.db, first)
    assert plan_watch.migration_ended(
        pm.db, pm.db.get_migration(first)) == "running"
    assert _kinds(pm.db, started["id"])[-1] == "ended"
    # Its end is recorded once, however often it is caught up.
    assert plan_watch.migration_ended(
        pm.db, pm.db.get_migration(first)) == "running"
    assert notified.kinds().count("ended") == 1
    _fail(pm.db, second)
    assert plan_watch.migration_ended(
        pm.db, pm.db.get_migration(second)) == "done"
    assert notified.kinds()[-3:] == ["ended", "ended", "done"]


def test_a_migration_of_no_plan_or_still_active_is_left_alone(pm,
                                                              notified):
    started = _started(pm, ["web-1"])
    active = pm.db.get_migration(started["vms"][0]["migration_id"])
    assert plan_watch.migration_ended(pm.db, active) is None
    loose = new_queued_migration(pm.db, "loose", state="failed")
    assert plan_watch.migration_ended(pm.db, loose) is None
    assert "ended" not in notified.kinds()
    assert plan_db.get(pm.db, started["id"])["state"] == "running"


def test_a_second_conductor_catching_up_at_once_sends_nothing_twice(
        pm, notified, monkeypatch):
    started = _started(pm, ["web-1"])
    _fail(pm.db, started["vms"][0]["migration_id"])
    # The second one read the plan (running) and its dedupe keys (none)
    # before the first recorded anything.
    stale = plan_db.get(pm.db, started["id"])
    assert plan_watch.catch_up(pm.db, started["id"]) == "done"
    monkeypatch.setattr(plan_db, "dedupe_keys", lambda db, plan_id: set())
    plan, _vms = plan_view.refresh(pm.db, stale)
    assert plan["state"] == "done"
    # The log refused its ended, its done compare-and-set found the plan
    # done already: nothing recorded, nothing sent again.
    assert _kinds(pm.db, started["id"]).count("ended") == 1
    assert _kinds(pm.db, started["id"]).count("done") == 1
    assert notified.kinds()[-2:] == ["ended", "done"]
    assert [notified.kinds().count(k) for k in ("ended", "done")] == [1, 1]


def test_a_plan_whose_vms_were_all_skipped_is_done_at_start(pm,
                                                            notified):
    started = _started(pm, [{"vm": "web-1", "overrides": {"flavor": "nope"}},
                            {"vm": "web-2", "overrides": {"flavor": "nope"}}])
    assert started["state"] == "done"
    assert plan_db.get(pm.db, started["id"])["state"] == "done"
    assert notified.kinds() == ["created", "validated", "started", "skipped",
                            "skipped", "done"]
    assert notified.sent[-1][2]["counts"] == {"skipped": 2}


def test_a_plan_is_not_done_before_its_start_went_through_every_vm(
        pm, notified, monkeypatch):
    real = plans._start_one
    ended = []

    def start_one(mgr, context, plan, item, position):
        if position == 1:
            # web-1's migration fails before start has reached web-2: its
            # conductor catches the plan up, which is not done yet.
            first = plan_db.get(mgr.db, plan["id"])["items"][0]
            _fail(mgr.db, first["migration_id"])
            ended.append(plan_watch.migration_ended(
                mgr.db, mgr.db.get_migration(first["migration_id"])))
        real(mgr, context, plan, item, position)
    monkeypatch.setattr(plans, "_start_one", start_one)
    started = _started(pm, ["web-1", {"vm": "web-2", "overrides": {
        "flavor": "nope"}}])
    assert ended == ["running"]
    assert started["state"] == "done"
    assert notified.kinds()[3:] == ["migration_created", "ended", "skipped",
                                "done"]


def test_the_sweep_ends_a_plan_whose_queued_migration_was_cancelled(
        pm, notified):
    started = _started(pm, ["web-1", "db-1"])
    first, second = [r["migration_id"] for r in started["vms"]]
    _fail(pm.db, first)
    # Cancelled before any conductor claimed it: no run ends anywhere.
    assert pm.cancel_migration(CTXT, second)["state"] == "cancelled"
    assert plan_db.get(pm.db, started["id"])["state"] == "running"
    assert plan_watch.sweep(pm.db) == [started["id"]]
    assert plan_db.get(pm.db, started["id"])["state"] == "done"
    assert notified.kinds()[-3:] == ["ended", "ended", "done"]
    assert plan_watch.sweep(pm.db) == []  # nothing running any more
    assert notified.kinds().count("done") == 1


def test_the_engines_renewal_loop_sweeps(pm, notified, monkeypatch):
    started = _started(pm, ["web-1"])
    pm.cancel_migration(CTXT, started["vms"][0]["migration_id"])
    # lease 0.3 s: a renewal period of 0.1 s.
    eng = _engine(pm.db, monkeypatch, lease=0.3)
    loop = threading.Thread(target=eng._renew_loop, daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while plan_db.get(pm.db, started["id"])["state"] != "done":
            assert time.monotonic() < deadline, "the sweep never ran"
            time.sleep(0.05)
    finally:
        eng._stop.set()
        loop.join(5)
    assert notified.kinds()[-2:] == ["ended", "done"]


def test_a_catch_up_that_fails_is_logged_never_raised(pm, monkeypatch,
                                                      caplog):
    started = _started(pm, ["web-1"])
    migration = pm.db.get_migration(started["vms"][0]["migration_id"])
    _fail(pm.db, migration["id"])

    def broken(db, plan):
        raise RuntimeError("database gone")
    monkeypatch.setattr(plan_view, "refresh", broken)
    with caplog.at_level(logging.WARNING):
        assert plan_watch.migration_ended(
            pm.db, pm.db.get_migration(migration["id"])) is None
    assert "catching up its event log failed" in caplog.text
    monkeypatch.setattr(plan_db, "list_", broken)
    assert plan_watch.sweep(pm.db) == []
    assert "Listing running plans failed" in caplog.text


def test_a_deleted_or_draft_plan_is_left_alone(pm, notified):
    assert plan_watch.catch_up(pm.db, "no-such-plan") is None
    draft = pm.create_plan(CTXT, {"name": "d", "vms": ["web-1"]})
    assert plan_watch.catch_up(pm.db, draft["id"]) == "draft"
    assert notified.kinds() == ["created"]
