"""Start times and cutover windows in a request (conductor/request.py,
conductor/schedule.py), in the record, and in a plan (its start time, its
limits, its event log) on the real SQLite database."""

import datetime

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor import request
from cs2os_agent.conductor import schedule
from tests.unit.conductor.helpers import CTXT
from tests.unit.conductor.test_plans import pm  # noqa: F401


def _in(seconds):
    return schedule.iso(schedule.now() + datetime.timedelta(
        seconds=seconds))


def _invalid(req):
    with pytest.raises(exception.Invalid) as caught:
        request.validate(dict({"source": "vm"}, **req))
    return caught.value.kwargs["reason"]


def test_start_at_is_stored_as_utc():
    req = request.validate({"source": "vm",
                            "start_at": "2030-01-01T03:00:00+02:00"})
    assert req["start_at"] == "2030-01-01T01:00:00Z"
    assert "start_at" not in request.validate({"source": "vm"})


@pytest.mark.parametrize("value, reason", [
    ("tomorrow", "start_at must be an ISO 8601 time such as"),
    ("2030-01-01T03:00:00", "start_at 2030-01-01T03:00:00 names no UTC "
                            "offset: add Z (UTC) or +HH:MM"),
])
def test_a_bad_start_at_is_refused_by_name(value, reason):
    assert _invalid({"start_at": value}).startswith(reason)


def test_a_window_is_for_warm_migrations_in_the_future_end_after_start():
    opens, ends = _in(60), _in(3600)
    req = request.validate({"source": "vm", "mode": "warm",
                            "cutover_window": {"start": opens,
                                               "end": ends}})
    assert req["cutover_window"] == {"start": opens, "end": ends}
    assert _invalid({"cutover_window": {"start": opens, "end": ends}}) == (
        "cutover_window applies to warm migrations only (mode is cold): "
        "a cold migration stops the VM before it copies")
    assert _invalid({"mode": "warm", "cutover_window": {
        "start": ends, "end": opens}}) == (
        "cutover_window ends (%s) before it starts (%s)" % (opens, ends))
    past = _invalid({"mode": "warm", "cutover_window": {
        "start": _in(-7200), "end": _in(-3600)}})
    assert past.startswith("cutover_window ended already")
    assert _invalid({"mode": "warm", "cutover_window": {
        "start": opens}}).startswith("cutover_window must be an object "
                                     "with exactly start and end")
    assert _invalid({"mode": "warm", "start_at": _in(7200),
                     "cutover_window": {"start": opens, "end": ends}}
                    ).startswith("start_at %s is not before" % _in(7200))


def test_a_migration_waiting_for_its_start_is_queued_and_says_so(mgr):
    created = mgr.create_migration(CTXT, {"source": "vm",
                                          "start_at": _in(3600)})
    record = mgr.db.get_migration(created["id"])
    assert schedule.waiting_to_start(record) is not None
    assert record["events"][0]["message"].startswith(
        "queued until its start time")
    # Past its time it waits no more (the engine may claim it).
    assert schedule.waiting_to_start(
        record, schedule.now() + datetime.timedelta(hours=2)) is None
    # Cancellable while it waits: at once.
    assert mgr.cancel_migration(CTXT, created["id"])["state"] == "cancelled"


def test_a_plan_start_time_limits_and_event_log(pm):  # noqa: F811
    at = _in(3600)
    plan = pm.create_plan(CTXT, {"name": "w", "vms": ["web-1", {
        "vm": "web-2", "overrides": {"flavor": "nope"}}], "start_at": at,
        "limits": {"max_per_compute_host": 3, "max_in_flight": 0}})
    assert plan["defaults"]["start_at"] == at
    # 0 is no cap of the plan's own.
    assert plan["limits"] == {"max_per_compute_host": 3}
    pm.start_plan(CTXT, plan["id"])
    shown = pm.get_plan(CTXT, plan["id"])
    (created,) = [r for r in shown["vms"] if r["migration_id"]]
    record = pm.db.get_migration(created["migration_id"])
    assert record["options"]["start_at"] == at
    assert record["options"]["plan_position"] == 0
    assert [(e["kind"], e["vm"]) for e in shown["events"]] == [
        ("created", None), ("validated", None), ("started", None),
        ("migration_created", "web-1"), ("skipped", "web-2")]
    assert "queued until %s" % at in shown["events"][3]["message"]
    assert "flavor nope not found" in shown["events"][4]["message"]
    # Its end is in the log once, however often the plan is looked at.
    pm.cancel_migration(CTXT, created["migration_id"])
    for _ in range(2):
        events = pm.get_plan(CTXT, plan["id"])["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[-2:] == ["ended", "done"] and kinds.count("ended") == 1
    assert "ended cancelled" in events[-2]["message"]


@pytest.mark.parametrize("body, reason", [
    ({"limits": {"max_per_rack": 1}}, "limits: unknown key(s) max_per_rack"),
    ({"limits": {"max_in_flight": -1}}, "limits max_in_flight must be a "
                                        "whole number from 0"),
    ({"limits": {"max_in_flight": True}}, "limits max_in_flight must be"),
    ({"start_at": "2030-01-01T00:00:00Z", "defaults": {
        "start_at": "2030-01-01T00:00:00Z"}}, "start_at is given twice"),
    ({"defaults": {"cutover_window": {"start": "2030-01-01T00:00:00Z",
                                      "end": "2030-01-01T01:00:00Z"}}},
     "defaults: cutover_window applies to warm migrations only"),
])
def test_bad_plan_schedules_and_limits_are_refused(pm, body, reason):  # noqa: F811
    with pytest.raises(exception.Invalid) as caught:
        pm.create_plan(CTXT, dict({"name": "w", "vms": ["web-1"]}, **body))
    assert caught.value.kwargs["reason"].startswith(reason)
