"""cs2os.plan.<kind> notifications (conductor/plan_notify.py, sent by
plan_events.record): a fixed payload, a context of ids only, and one
notification per event the log actually holds.

The plans run on the real SQLite database (``db``) with a fake notifier;
the wire format is checked with the real notifier (oslo.messaging's
messagingv2 driver) over kombu's in-memory broker, as test_notify.py does
for migrations.
"""

import datetime
import logging

import pytest

from cs2os_agent.conductor import manager
from cs2os_agent.conductor import plan_events
from cs2os_agent.conductor import plan_notify
from cs2os_agent.db import plans as plan_db
from tests.unit.conductor.helpers import CTXT
from tests.unit.conductor.helpers import Agent
from tests.unit.conductor.helpers import Engine
from tests.unit.conductor.test_notify import TOKEN
from tests.unit.conductor.test_notify import notifier  # noqa: F401
from tests.unit.conductor.test_notify import sent
from tests.unit.conductor.test_notify import topic  # noqa: F401
from tests.unit.conductor.test_notify import unpack
from tests.unit.conductor.test_plans import _find
from tests.unit.conductor.test_plans import _preflight

ENVELOPE = {"cs2os_object.name", "cs2os_object.namespace",
            "cs2os_object.version", "cs2os_object.data"}
# A plan record as plan_db returns it, with what must not go out.
PLAN = {"id": "p-1", "name": "wave-1", "state": "running",
        "user_id": "alice", "project_id": "p-alice",
        "defaults": {"host": "cmp1", "networks": {"guest": "private"}},
        "selector": {"tag": "wave=1"}, "limits": {"max_in_flight": 3},
        "items": [{"vm": "web-1", "preflight": {"findings": []}}],
        "created_at": "2024-05-01T10:00:00"}
AT = datetime.datetime(2024, 5, 1, 10, 5, 0, 123456)


class FakeNotifier:
    def __init__(self):
        self.sent = []

    def emit(self, plan, event, migration_state=None):
        self.sent.append((plan["id"], event["kind"], event, migration_state))

    def kinds(self):
        return [kind for _plan, kind, _event, _state in self.sent]


@pytest.fixture
def fake():
    recording = FakeNotifier()
    plan_events.set_notifier(recording)
    yield recording
    plan_events.set_notifier(None)


@pytest.fixture
def pm(db):
    return manager.ConductorManager(db, Engine(), agent_api=Agent(),
                                    find_vm=_find, preflight=_preflight,
                                    select_vms=lambda selector: [])


def _plan_record(db, **values):
    return plan_db.create(db, dict({
        "id": "p-1", "name": "wave-1", "state": "running",
        "user_id": "alice", "project_id": "p-alice", "defaults": {},
        "items": []}, **values))


def test_payload_holds_exactly_the_declared_fields():
    event = {"kind": "migration_created", "message": "VM web-1: created",
             "vm": "web-1", "migration_id": "m-1", "created_at": AT,
             "counts": None, "dedupe": "internal-key", "id": 7}
    payload = plan_notify.plan_event_payload(PLAN, event)
    assert set(payload) == ENVELOPE
    assert payload["cs2os_object.name"] == "PlanEventPayload"
    assert payload["cs2os_object.namespace"] == "cs2os"
    assert payload["cs2os_object.version"] == "1.0"
    assert payload["cs2os_object.data"] == {
        "plan_id": "p-1", "plan_name": "wave-1", "kind": "migration_created",
        "message": "VM web-1: created", "vm": "web-1",
        "migration_id": "m-1", "created_at": "2024-05-01T10:05:00.123456",
        "counts": None}
    assert list(payload["cs2os_object.data"]) == list(plan_notify.FIELDS)


def test_done_counts_every_final_state():
    data = plan_notify.plan_event_payload(PLAN, {
        "kind": "done", "message": "plan done: 1 failed, 2 succeeded",
        "created_at": AT, "counts": {"failed": 1, "succeeded": 2}})[
            "cs2os_object.data"]
    assert data["counts"] == {"succeeded": 2, "failed": 1, "cancelled": 0,
                              "skipped": 0, "not_started": 0}
    assert (data["vm"], data["migration_id"]) == (None, None)


@pytest.mark.parametrize("kind,state,expected", [
    ("ended", "failed", "warn"), ("ended", "succeeded", "info"),
    ("ended", "cancelled", "info"), ("not_started", None, "warn"),
    ("skipped", None, "info"), ("created", None, "info"),
    ("done", None, "info")])
def test_priority(kind, state, expected):
    assert plan_notify.priority({"kind": kind}, state) == expected


@pytest.fixture
def wire(notifier):  # noqa: F811
    """The real PlanNotifier on the migrations' notifier's transport."""
    return plan_notify.PlanNotifier(None, "conductor-1",
                                    transport=notifier.transport)


def test_the_message_on_the_wire(wire, topic):  # noqa: F811
    wire.emit(PLAN, {"kind": "ended", "message": "VM web-1: migration m-1 "
                     "ended failed: boom", "vm": "web-1",
                     "migration_id": "m-1", "created_at": AT},
              migration_state="failed")
    assert sent(topic, "info") == []
    (body,) = sent(topic, "warn")
    raw = body.decode()
    for internal in ("private", "wave=1", "max_in_flight", "findings",
                     "cmp1"):
        assert internal not in raw
    message = unpack(body)
    assert message["event_type"] == "cs2os.plan.ended"
    assert message["priority"] == "WARN"
    assert message["publisher_id"] == "cs2os-conductor.conductor-1"
    assert message["payload"]["cs2os_object.data"]["created_at"] == \
        "2024-05-01T10:05:00.123456"
    context = {k[len("_context_"):]: v for k, v in message.items()
               if k.startswith("_context_")}
    assert set(context) == {"user", "user_id", "project", "project_id",
                            "request_id", "global_request_id"}
    # The plan's owner, not whoever's call made the conductor look.
    assert (context["user_id"], context["project_id"]) == ("alice",
                                                           "p-alice")


def test_a_plan_without_owner_is_sent_in_the_conductors_name(wire,
                                                              topic):  # noqa: F811
    wire.emit(dict(PLAN, user_id=None, project_id=None),
              {"kind": "started", "message": "started", "created_at": AT})
    (body,) = sent(topic, "info")
    message = unpack(body)
    assert message["event_type"] == "cs2os.plan.started"
    # The conductor's own (admin) context names no user or project.
    assert (message["_context_user_id"],
            message["_context_project_id"]) == (None, None)
    assert message["_context_request_id"].startswith("req-")
    assert TOKEN not in body.decode()


def test_an_event_recorded_once_is_notified_once(db, fake):
    _plan_record(db)
    key = "ended:m-1:2024-05-01T10:05:00"
    for _ in range(2):  # a second conductor, looking at the same time
        plan_events.record(db, "p-1", plan_events.ENDED, "m-1 ended",
                           vm="web-1", migration_id="m-1", dedupe=key,
                           at=AT, migration_state="succeeded")
    assert len(plan_db.events(db, "p-1")) == 1
    (sent_,) = fake.sent
    plan_id, kind, event, state = sent_
    assert (plan_id, kind, state) == ("p-1", "ended", "succeeded")
    assert event == {"kind": "ended", "message": "m-1 ended", "vm": "web-1",
                     "migration_id": "m-1", "created_at": AT,
                     "counts": None}


def test_the_log_and_the_notification_tell_the_same_time(db, fake):
    _plan_record(db)
    assert plan_events.record(db, "p-1", plan_events.STARTED, "started")
    (_plan, _kind, event, _state), = fake.sent
    (logged,) = plan_db.events(db, "p-1")
    assert logged["created_at"] == event["created_at"].isoformat()


def test_an_event_not_recorded_is_not_notified(db, fake, monkeypatch):
    _plan_record(db)

    def broken(*args, **kwargs):
        raise RuntimeError("database gone")
    monkeypatch.setattr(plan_db, "add_event", broken)
    assert plan_events.record(db, "p-1", plan_events.STARTED, "x") is False
    assert fake.sent == []


def test_a_failing_notifier_is_logged_never_raised(db, caplog):
    _plan_record(db)

    class Broken:
        def emit(self, plan, event, migration_state=None):
            raise RuntimeError("bus down")
    plan_events.set_notifier(Broken())
    try:
        with caplog.at_level(logging.WARNING):
            assert plan_events.record(db, "p-1", plan_events.STARTED, "x")
    finally:
        plan_events.set_notifier(None)
    assert [e["kind"] for e in plan_db.events(db, "p-1")] == ["started"]
    assert "notification of event started not sent" in caplog.text


def test_without_a_notifier_the_log_is_kept_and_nothing_is_sent(db):
    _plan_record(db)
    assert plan_events.record(db, "p-1", plan_events.STARTED, "x") is True
    assert [e["kind"] for e in plan_db.events(db, "p-1")] == ["started"]


def test_a_plan_run_sends_each_event_of_its_log_once(pm, fake):
    plan = pm.create_plan(CTXT, {"name": "wave-1", "vms": [
        "web-1", {"vm": "web-2", "overrides": {"flavor": "nope"}}]})
    pm.validate_plan(CTXT, plan["id"])
    started = pm.start_plan(CTXT, plan["id"])
    migration_id = started["vms"][0]["migration_id"]
    pm.db.update_migration(migration_id, {
        "state": "failed", "error": "boom",
        "finished_at": datetime.datetime(2024, 5, 1, 11, 0, 0)})
    for _ in range(3):  # every look catches up; only the first records
        assert pm.get_plan(CTXT, plan["id"])["state"] == "done"
    # web-1's migration, then web-2 skipped: plan order.
    assert fake.kinds() == ["created", "validated", "started",
                            "migration_created", "skipped", "ended", "done"]
    logged = plan_db.events(pm.db, plan["id"])
    assert sorted(e["kind"] for e in logged) == sorted(fake.kinds())
    by_kind = {kind: (event, state) for _p, kind, event, state in fake.sent}
    ended, state = by_kind["ended"]
    assert state == "failed"
    assert (ended["vm"], ended["migration_id"]) == ("web-1", migration_id)
    assert ended["created_at"] == datetime.datetime(2024, 5, 1, 11, 0, 0)
    assert by_kind["done"][0]["counts"] == {"failed": 1, "skipped": 1}
    assert by_kind["skipped"][0]["vm"] == "web-2"
    # The messages are the log's, word for word.
    assert sorted(e["message"] for e in logged) == sorted(
        event["message"] for _p, _k, event, _s in fake.sent)


def test_a_vm_not_started_is_notified(pm, fake):
    pm.create_migration(CTXT, {"source": "web-1"})
    plan = pm.create_plan(CTXT, {"name": "w", "vms": ["web-1"]})
    pm.start_plan(CTXT, plan["id"])
    (event, _state), = [(e, s) for _p, k, e, s in fake.sent
                        if k == "not_started"]
    assert event["vm"] == "web-1" and "not started" in event["message"]
