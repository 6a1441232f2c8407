"""Plans in the conductor (conductor/plans.py, plan_view.py) on a real
SQLite database, with a recording engine, a fake CloudStack lookup and a
fake preflight."""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import plans
from tests.unit.conductor.helpers import CTXT
from tests.unit.conductor.helpers import Agent
from tests.unit.conductor.helpers import Engine

VMS = {"web-1": "11111111-0000-0000-0000-000000000001",
       "web-2": "11111111-0000-0000-0000-000000000002",
       "db-1": "11111111-0000-0000-0000-000000000003"}


def _find(ref):
    for name, vm_id in VMS.items():
        if ref in (name, vm_id):
            return {"id": vm_id, "name": name}
    raise exception.Invalid(reason="no VM %s" % ref)


def _preflight(req):
    bad = req.get("flavor") == "nope"
    findings = [{"check": "flavor", "severity": "critical",
                 "message": "flavor nope not found"}] if bad else []
    return {"ok": not bad, "summary": "%d critical, 0 warnings" % bad,
            "findings": findings,
            "plan": {"vm": _find(req["source"]),
                     "estimate": {"bytes_to_move": 10}}}


@pytest.fixture
def pm(db):
    selected = []

    def select(selector):
        selected.append(selector)
        return [{"id": VMS["db-1"], "name": "db-1"}]
    mgr = manager.ConductorManager(db, Engine(), agent_api=Agent(),
                                   find_vm=_find, preflight=_preflight,
                                   select_vms=select)
    mgr.selected = selected
    return mgr


def _plan(pm, **body):
    return pm.create_plan(CTXT, dict({"name": "wave-1", "defaults": {
        "host": "cmp1"}, "vms": ["web-1", {"vm": "web-2", "overrides": {
            "flavor": "nope"}}]}, **body))


def test_create_records_the_vms_resolved_and_a_draft(pm):
    plan = _plan(pm)
    assert plan["state"] == "draft" and plan["name"] == "wave-1"
    assert [(r["vm"], r["vm_id"], r["state"]) for r in plan["vms"]] == [
        ("web-1", VMS["web-1"], "pending"), ("web-2", VMS["web-2"],
                                             "pending")]
    assert plan["counts"]["pending"] == 2
    assert pm.get_plan(CTXT, plan["id"])["vms"] == plan["vms"]
    assert [p["id"] for p in pm.list_plans(CTXT)] == [plan["id"]]
    assert pm.engine.submitted == []


def test_a_selector_is_resolved_at_create_and_recorded(pm):
    plan = _plan(pm, vms=["web-1"], selector={"tag": "tier=db"})
    # Every VM listed once to resolve the names, then the selector.
    assert pm.selected == [{}, {"tag": "tier=db"}]
    assert plan["selector"] == {"tag": "tier=db"}
    assert [r["vm"] for r in plan["vms"]] == ["web-1", "db-1"]


@pytest.mark.parametrize("body,words", [
    ({"vms": []}, "at least one VM"),
    ({"vms": ["web-1", "web-1"]}, None),
    ({"vms": ["web-1", {"vm": "web-1", "overrides": {"host": "x"}}]},
     "VM web-1 is in the plan twice"),
    ({"defaults": {"source": "x"}}, "defaults: unknown field(s) source"),
    ({"defaults": {"mode": "hot"}}, "defaults: mode hot is not supported"),
    ({"vms": [{"vm": "web-1", "overrides": {"dry_run": True}}]},
     "overrides of web-1: unknown field(s) dry_run"),
    ({"selector": {"colour": "red"}}, "selector: unknown key(s) colour"),
    ({"selector": {"tag": "tier"}}, "selector tag must be key=value"),
    ({"name": " "}, "name must be"),
])
def test_a_bad_plan_is_refused_naming_the_problem(pm, body, words):
    if words is None:  # the same VM listed twice is one VM
        assert len(_plan(pm, **body)["vms"]) == 1
        return
    with pytest.raises(exception.Invalid) as caught:
        _plan(pm, **body)
    assert words in str(caught.value)


def test_validate_start_and_the_end_of_a_plan(pm):
    plan = _plan(pm)
    checked = pm.validate_plan(CTXT, plan["id"])
    assert [r["preflight"]["ok"] for r in checked["vms"]] == [True, False]
    started = pm.start_plan(CTXT, plan["id"])
    assert started["state"] == "running"
    first, second = started["vms"]
    assert (first["state"], second["state"]) == ("queued", "skipped")
    assert second["error"] == "skipped by preflight: flavor nope not found"
    assert second["migration_id"] is None
    migration = pm.db.get_migration(first["migration_id"])
    assert (migration["plan_id"], migration["source_ref"],
            migration["target_host"]) == (plan["id"], VMS["web-1"], "cmp1")
    assert pm.engine.submitted == [migration["id"]]
    with pytest.raises(plans.PlanStateConflict):
        pm.start_plan(CTXT, plan["id"])
    with pytest.raises(plans.PlanStateConflict) as caught:
        pm.delete_plan(CTXT, plan["id"])
    assert "running 1 migration(s)" in str(caught.value)
    pm.db.update_migration(migration["id"], {"state": "failed",
                                             "error": "boom",
                                             "bytes_total": 7})
    done = pm.get_plan(CTXT, plan["id"])
    assert done["state"] == "done"
    assert (done["counts"]["failed"], done["counts"]["skipped"]) == (1, 1)
    assert done["failed"] == [{"vm": "web-1", "migration_id":
                               migration["id"], "error": "boom"}]
    assert done["bytes_total"] == 7
    retried = pm.retry_plan(CTXT, plan["id"])
    assert retried["state"] == "running"
    assert retried["vms"][0]["state"] == "queued"
    cancelled = pm.cancel_plan(CTXT, plan["id"])
    assert cancelled["state"] == "cancelled"
    assert cancelled["vms"][0]["state"] == "cancelled"
    pm.delete_plan(CTXT, plan["id"])
    with pytest.raises(plans.PlanNotFound):
        pm.get_plan(CTXT, plan["id"])
    # The migration stays, with its plan's id.
    assert pm.db.get_migration(migration["id"])["plan_id"] == plan["id"]


def test_start_without_validate_runs_the_preflight_first(pm):
    plan = _plan(pm)
    started = pm.start_plan(CTXT, plan["id"])
    assert [r["state"] for r in started["vms"]] == ["queued", "skipped"]


def test_a_vm_whose_migration_cannot_be_created_does_not_stop_the_plan(pm):
    busy = pm.create_migration(CTXT, {"source": "web-1"})
    plan = _plan(pm, vms=["web-1", "db-1"])
    started = pm.start_plan(CTXT, plan["id"])
    first, second = started["vms"]
    assert first["state"] == "not_started"
    assert "already has an active migration %s" % busy["id"] in \
        first["error"]
    assert second["state"] == "queued"
    assert started["failed"][0]["vm"] == "web-1"


def test_an_unknown_plan_is_not_found(pm):
    for call in (pm.get_plan, pm.validate_plan, pm.start_plan,
                 pm.cancel_plan, pm.delete_plan, pm.retry_plan):
        with pytest.raises(plans.PlanNotFound):
            call(CTXT, "no-such-plan")


def test_a_crashing_preflight_is_that_vms_critical_finding(pm):
    def crash(req):
        raise RuntimeError("disk on fire")
    pm.preflight = crash
    checked = pm.validate_plan(CTXT, _plan(pm)["id"])
    finding = checked["vms"][0]["preflight"]["findings"][0]
    assert finding["severity"] == "critical"
    assert "disk on fire" in finding["message"]


def test_listed_vms_are_resolved_from_one_listing(db):
    asked = []

    def find(ref):
        asked.append(ref)
        return _find(ref)
    every = [{"id": vm_id, "name": name} for name, vm_id in VMS.items()]
    mgr = manager.ConductorManager(db, Engine(), find_vm=find,
                                   preflight=_preflight,
                                   select_vms=lambda s: every)
    plan = mgr.create_plan(CTXT, {"name": "p", "vms": [
        "web-1", VMS["web-2"].upper(), "db-1"]})
    assert [r["vm_id"] for r in plan["vms"]] == list(VMS.values())
    assert asked == []


def test_the_plan_calls_need_rpc_1_5():
    from cs2os_agent.conductor import rpcapi
    from tests.unit.conductor.test_rpcapi import RecordingClient

    api_ = rpcapi.ConductorAPI.__new__(rpcapi.ConductorAPI)
    api_.client, api_.timeout = RecordingClient(), None
    api_.create_plan(CTXT, {"name": "p"})
    api_.list_plans(CTXT)
    for name in ("get", "validate", "start", "cancel", "delete", "retry"):
        getattr(api_, "%s_plan" % name)(CTXT, "p-1")
    assert api_.client.calls == [
        ("1.5", "create_plan", {"plan": {"name": "p"}}),
        ("1.5", "list_plans", {"filters": {}})] + [
        ("1.5", "%s_plan" % name, {"plan_id": "p-1"}) for name in (
            "get", "validate", "start", "cancel", "delete", "retry")]
    # Every one of them is an endpoint of the manager.
    for _version, method, _kwargs in api_.client.calls:
        assert callable(getattr(manager.ConductorManager, method))
