"""A conductor that takes over a warm migration held READY checks the
cutover window again before it cuts over (flow/cutover.py, window.py).

The real engine, FlowContext, runner and warm flow's cutover step on a
real PostgreSQL: the record is one a conductor left at step "cutover"
(its mirror was READY inside the window, then that conductor died, its
claim expired) and the window has ended since.  The engine of a second
conductor adopts it; the cutover step must fail before it opens the
CloudStack KVM host (the source stays untouched), the rollback runs, and
the migration ends failed, naming the window.  The undo steps are
recorded instead of run (there is no mirror to end here), as is the KVM
host connection.
"""

import datetime
import time
import types
import uuid

from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import schedule
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import warm
from cs2os_agent.db import api
from cs2os_agent.db import migration as db_migration
from cs2os_agent.sourcehost import kvmhost

# The PostgreSQL the database tests start (a fixture, taken by name).
from tests.functional.test_database import pg_cluster  # noqa: F401

CONF = types.SimpleNamespace(conductor=types.SimpleNamespace(
    lease_seconds=30, agent_restart_timeout=30, rollback_attempts=2))


def _left_at_cutover(db, mid, window_end):
    now = schedule.now()
    db.create_migration({
        "id": mid, "source_ref": "web-1", "source_vm_id": "vm-1",
        "source_vm_name": "web-1", "mode": "warm", "state": "running",
        "step": "cutover", "conductor": "a-conductor-that-died",
        "lease_epoch": 1, "lease_until": datetime.datetime(2001, 1, 1),
        "options": {"cutover": "auto", "cutover_window": {
            "start": schedule.iso(now - datetime.timedelta(hours=1)),
            "end": schedule.iso(window_end)}},
        "source": {}, "result": {}, "project_id": "ops",
        "resources": {"kvm_host": "kvm-1", "source_domain": "i-2-3-VM",
                      "source_disk": "vda"}})


def test_a_takeover_past_the_window_fails_with_the_source_untouched(
        pg_cluster, monkeypatch):  # noqa: F811
    db = api.Database(pg_cluster.create_database(
        "window_%s" % uuid.uuid4().hex[:10]))
    db_migration.upgrade(db)
    touched, undone = [], []
    monkeypatch.setattr(kvmhost, "connect", lambda conf, host: (
        touched.append(host), 1 / 0))
    monkeypatch.setattr(warm, "ROLLBACK", [
        (name, lambda ctx, name=name: undone.append(name))
        for name, _ in warm.ROLLBACK])
    _left_at_cutover(db, "late", schedule.now() - datetime.timedelta(
        seconds=5))

    def make_context(migration, owner):
        return flow_context.FlowContext(migration, db, CONF,
                                        types.SimpleNamespace(
                                            admin_context=None),
                                        owner=owner)
    eng = conductor_engine.Engine(db, "c2", 2, 30, make_context)
    try:
        eng.adopt()
        deadline = time.monotonic() + 30
        while db.get_migration("late")["state"] not in ("failed",
                                                        "succeeded"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        eng.stop()
    record = db.get_migration("late")
    assert (record["state"], record["conductor"], record["lease_epoch"]) \
        == ("failed", "c2", 2)
    assert "before the cutover began" in record["error"], record["error"]
    assert "the CloudStack VM keeps running untouched" in record["error"]
    assert touched == []  # the KVM host was never opened
    assert undone == [name for name, _ in warm.ROLLBACK]
    db.engine.dispose()
