"""cs2os.plan.<kind> notifications from a real cs2os-conductor, received
from the real RabbitMQ.

A plan of two VMs of the CloudStack API stand-in (no KVM host behind it,
no OpenStack): validated by the conductor (both have a critical finding:
the stand-in has no such VM), then the first VM's preflight is marked ok
in the database, standing in for a VM the clouds could take (a passing
preflight needs the minicloud: tests/e2e/test_plans.py), and the plan's
start time set a few seconds ahead, so that start creates its migration
(queued until then) and skips the second, and returns with the plan
running.  Nobody reads the plan after that: the migration fails at
validate on the conductor, which records its end and the plan's done
itself (conductor/plan_watch.py), and each event of the log is received
once, with its payload; the plan's row, read from the database, is done.
A second conductor looking at the plan at the same moment (this process,
with the real notifier on the same bus) records no second ``ended``, so
sends none.  A plan whose VMs are all skipped is done when start returns.
"""

import datetime
import json
import os
import threading
import time

import pytest

from cs2os_agent import conf
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import notify
from cs2os_agent.conductor import plan_events
from cs2os_agent.conductor import plan_notify
from cs2os_agent.conductor import plan_view
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from cs2os_agent.conductor import schedule
from cs2os_agent.db import api as db_api
from cs2os_agent.db import plans as plan_db
from tests.functional import checks
from tools.testbed import conductor_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID
TOPIC = "notifications-plans-%s" % RUN_ID
KINDS = ["created", "validated", "started", "migration_created", "skipped",
         "ended", "done"]


class Received:
    """Every notification on TOPIC: (priority, event type, payload,
    context), in the order RabbitMQ delivered them."""

    def __init__(self):
        self.all = []
        self._cond = threading.Condition()

    def _add(self, priority, ctxt, event_type, payload):
        with self._cond:
            self.all.append((priority, event_type, payload, ctxt))
            self._cond.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("info", ctxt, event_type, payload)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("warn", ctxt, event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("error", ctxt, event_type, payload)

    def of_plan(self, plan_id):
        with self._cond:
            return [r for r in self.all if r[1].startswith("cs2os.plan.")
                    and r[2]["cs2os_object.data"]["plan_id"] == plan_id]

    def wait_for(self, plan_id, count, timeout=60):
        with self._cond:
            if not self._cond.wait_for(
                    lambda: len(self.of_plan(plan_id)) >= count, timeout):
                raise AssertionError("saw only %s" % [
                    r[1] for r in self.of_plan(plan_id)])
        return self.of_plan(plan_id)


@pytest.fixture(scope="module")
def received(services):
    with checks.notification_listener(Received(), TOPIC) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def db_url(workdir):
    return "sqlite:///%s" % os.path.join(workdir, "plan-notify.sqlite")


@pytest.fixture(scope="module")
def plans_api(services):
    # Validate runs every VM's preflight inside the call.
    return conductor_rpcapi.ConductorAPI(timeout=60)


@pytest.fixture(scope="module")
def conductor(workdir, services, cloud, db_url, received):
    proc = conductor_process.ConductorProcess(
        workdir, "cs2os-test-%s-plan-notify" % RUN_ID, harness.TRANSPORT_URL,
        services["exchange"], db_url, TOPIC,
        sections={"cloudstack": {"endpoint": cloud.endpoint,
                                 "api_key": cloud.admin.apikey,
                                 "secret_key": cloud.admin.secretkey,
                                 "job_poll_interval": 0.2}})
    proc.manage("db", "sync")
    # The session's short RPC timeout: a probe sent before the conductor
    # listens is lost, and waited for.
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def second_conductor(services, monkeypatch):
    """This process as a second conductor's plan_events: the real
    notifier, on the same bus and topic as the conductor's."""
    group = "oslo_messaging_notifications"
    conf.CONF.set_override("driver", ["messagingv2"], group=group)
    conf.CONF.set_override("topics", [TOPIC], group=group)
    notifier = plan_notify.PlanNotifier(conf.CONF, "second-conductor")
    plan_events.set_notifier(notifier)
    yield notifier
    plan_events.set_notifier(None)
    notifier._notifier.transport.cleanup()
    conf.CONF.clear_override("driver", group=group)
    conf.CONF.clear_override("topics", group=group)


def test_a_plan_run_is_notified_event_by_event(conductor, plans_api,
                                               received, db_url,
                                               second_conductor,
                                               monkeypatch):
    owner = cs2os_context.RequestContext(user_id="planner-%s" % RUN_ID,
                                         project_id="ops-%s" % RUN_ID)
    vms = ["ghost-a-%s" % RUN_ID, "ghost-b-%s" % RUN_ID]
    plan = plans_api.create_plan(owner, {"name": "notify-%s" % RUN_ID,
                                         "vms": vms})
    checked = plans_api.validate_plan(owner, plan["id"])
    assert [r["preflight"]["ok"] for r in checked["vms"]] == [False, False]
    db = db_api.Database(db_url)
    record = plan_db.get(db, plan["id"])
    items = record["items"]
    items[0]["preflight"] = {"ok": True, "summary": "0 critical, 0 warnings",
                             "findings": []}
    # A start time a few seconds ahead: the migration cannot end before
    # start_plan has answered (whose own look at the plan catches it up).
    start_at = schedule.iso(schedule.now() + datetime.timedelta(seconds=5))
    assert plan_db.update(db, plan["id"], {
        "items": items,
        "defaults": dict(record["defaults"], start_at=start_at)},
        expect_state="draft")
    started = plans_api.start_plan(owner, plan["id"])
    migration_id = started["vms"][0]["migration_id"]
    assert [r["state"] for r in started["vms"]] == ["queued", "skipped"]
    assert started["state"] == "running"

    # From here on nobody reads the plan (no get_plan, no list_plans)
    # until its done has been received and its row read from the
    # database: the conductor that ran the migration ends the plan.
    got = received.wait_for(plan["id"], len(KINDS), timeout=90)
    assert [t for _p, t, _d, _c in got] == [
        "cs2os.plan.%s" % k for k in KINDS]
    row = plan_db.get(db, plan["id"])
    assert row["state"] == "done"
    assert [e["kind"] for e in plan_db.events(db, plan["id"])] == KINDS
    assert db.get_migration(migration_id)["state"] == "failed"
    plans_api.get_plan(owner, plan["id"])  # a look now: nothing new
    for priority, event_type, payload, ctxt in got:
        print(event_type, priority, json.dumps(payload, indent=2))
        assert set(payload) == {"cs2os_object.name",
                                "cs2os_object.namespace",
                                "cs2os_object.version", "cs2os_object.data"}
        assert (payload["cs2os_object.name"],
                payload["cs2os_object.namespace"],
                payload["cs2os_object.version"]) == (
                    "PlanEventPayload", "cs2os", "1.0")
        data = payload["cs2os_object.data"]
        assert list(data) == list(plan_notify.FIELDS)
        assert (data["plan_id"], data["plan_name"]) == (
            plan["id"], "notify-%s" % RUN_ID)
        assert data["kind"] == event_type.rsplit(".", 1)[1]
        # msg_id, reply_q, client_timeout: added by the receiving driver.
        assert set(ctxt) - {"msg_id", "reply_q", "client_timeout"} == set(
            notify.CONTEXT_FIELDS)
        # The plan's owner, whichever call made the conductor send it.
        assert (ctxt["user_id"], ctxt["project_id"]) == (
            owner.user_id, owner.project_id)
        # Only a failed migration's end needs a look.
        assert priority == ("warn" if data["kind"] == "ended" else "info")
    by_kind = {d["cs2os_object.data"]["kind"]: d["cs2os_object.data"]
               for _p, _t, d, _c in got}
    assert (by_kind["migration_created"]["vm"],
            by_kind["migration_created"]["migration_id"]) == (
                vms[0], migration_id)
    assert by_kind["skipped"]["vm"] == vms[1]
    ended = by_kind["ended"]
    assert (ended["vm"], ended["migration_id"]) == (vms[0], migration_id)
    assert "ended failed" in ended["message"] and vms[0] in ended["message"]
    assert by_kind["done"]["counts"] == {
        "succeeded": 0, "failed": 1, "cancelled": 0, "skipped": 1,
        "not_started": 0}
    assert by_kind["created"]["counts"] is None
    # The payloads tell what the plan's log holds, word for word.
    logged = plans_api.get_plan(owner, plan["id"])["events"]
    assert sorted((e["kind"], e["message"]) for e in logged) == sorted(
        (d["kind"], d["message"]) for d in by_kind.values())

    # A second conductor that read the plan's dedupe keys before the first
    # recorded the end: its catch-up tries to record it again, the log
    # refuses the duplicate, and no second cs2os.plan.ended goes out.
    monkeypatch.setattr(plan_db, "dedupe_keys", lambda db, plan_id: set())
    plan_view.view(db, plan_db.get(db, plan["id"]))
    # What this process sends does reach the bus (so the check above can
    # fail): one event it records anew, after the refused one.
    assert plan_events.record(db, plan["id"], plan_events.ENDED,
                              "control-%s" % RUN_ID, vm=vms[0],
                              migration_id=migration_id,
                              dedupe="control-%s" % RUN_ID,
                              migration_state="failed")
    got = received.wait_for(plan["id"], len(KINDS) + 1)
    ends = [d["cs2os_object.data"]["message"] for _p, t, d, _c in got
            if t == "cs2os.plan.ended"]
    assert ends == [ended["message"], "control-%s" % RUN_ID]
    assert len(got) == len(KINDS) + 1


def test_a_plan_whose_vms_are_all_skipped_is_done_at_start(conductor,
                                                           plans_api,
                                                           received,
                                                           db_url):
    owner = cs2os_context.RequestContext(user_id="planner-%s" % RUN_ID,
                                         project_id="ops-%s" % RUN_ID)
    vms = ["ghost-c-%s" % RUN_ID, "ghost-d-%s" % RUN_ID]
    plan = plans_api.create_plan(owner, {"name": "skipped-%s" % RUN_ID,
                                         "vms": vms})
    # Not validated: start runs the preflight, which skips both.
    started = plans_api.start_plan(owner, plan["id"])
    assert [r["state"] for r in started["vms"]] == ["skipped", "skipped"]
    assert started["state"] == "done"
    got = received.wait_for(plan["id"], 6)
    assert [t.rsplit(".", 1)[1] for _p, t, _d, _c in got] == [
        "created", "validated", "started", "skipped", "skipped", "done"]
    assert got[-1][2]["cs2os_object.data"]["counts"] == {
        "succeeded": 0, "failed": 0, "cancelled": 0, "skipped": 2,
        "not_started": 0}
    db = db_api.Database(db_url)
    assert plan_db.get(db, plan["id"])["state"] == "done"
    # Nothing more comes: the done is sent once.
    time.sleep(2)
    assert len(received.of_plan(plan["id"])) == 6
