"""/v1/plans through the WSGI application: in front of a real conductor
manager (in process), policy first, schemas, and the conductor's plan
errors as they arrive over RPC."""

import types

import oslo_messaging as messaging
import pytest

from cs2os_agent.api import app as api_app
from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from tests.unit.api.harness import ADMIN
from tests.unit.api.harness import DEEP
from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error
from tests.unit.api.test_policy import _as_member


def _report(req):
    bad = req.get("flavor") == "nope"
    return {"ok": not bad, "summary": "%d critical, 0 warnings" % bad,
            "findings": [{"check": "flavor", "severity": "critical",
                          "message": "flavor nope not found"}] if bad
            else [], "plan": {}}


@pytest.fixture
def plan_app(config, db):
    submitted = []
    mgr = manager.ConductorManager(
        db, types.SimpleNamespace(submit=submitted.append),
        preflight=_report, select_vms=lambda s: [{"id": "vm-s",
                                                  "name": "sel-1"}])
    config.set_override("auth_strategy", "noauth", group="api")
    return api_app.build(config, mgr), submitted


def test_create_validate_start_show_list_and_delete(plan_app):
    app, submitted = plan_app
    resp, data = call(app, "POST", "/v1/plans", {"plan": {
        "name": "wave-1", "defaults": {"host": "cmp1"},
        "vms": ["web-1", {"vm": "web-2", "overrides": {"flavor": "nope"}}],
        "selector": {"tag": "tier=db"}}}, ADMIN)
    assert resp.status_int == 201, data
    plan = data["plan"]
    assert resp.location == "http://api.test:9877/v1/plans/%s" % plan["id"]
    assert [r["vm"] for r in plan["vms"]] == ["web-1", "web-2", "sel-1"]
    assert plan["selector"] == {"tag": "tier=db"}
    url = "/v1/plans/%s" % plan["id"]
    resp, data = call(app, "POST", url + "/action", {"validate": {}}, ADMIN)
    assert resp.status_int == 202
    assert [r["preflight"]["ok"] for r in data["plan"]["vms"]] == [
        True, False, True]
    resp, data = call(app, "POST", url + "/action", {"start": {}}, ADMIN)
    assert resp.status_int == 202
    assert [r["state"] for r in data["plan"]["vms"]] == [
        "queued", "skipped", "queued"]
    assert len(submitted) == 2
    resp, data = call(app, "POST", url + "/action", {"start": {}}, ADMIN)
    assert resp.status_int == 409
    assert error(data)["code"] == "cs2os.PlanStateConflict"
    resp, data = call(app, "GET", url, None, ADMIN)
    assert data["plan"]["counts"]["queued"] == 2
    resp, data = call(app, "GET", "/v1/plans?state=running", None, ADMIN)
    assert [p["id"] for p in data["plans"]] == [plan["id"]]
    assert "vms" not in data["plans"][0]
    resp, data = call(app, "DELETE", url, None, ADMIN)
    assert resp.status_int == 409
    resp, data = call(app, "POST", url + "/action", {"cancel": {}}, ADMIN)
    assert data["plan"]["state"] == "cancelled"
    resp, _ = call(app, "DELETE", url, None, ADMIN)
    assert resp.status_int == 204
    resp, data = call(app, "GET", url, None, ADMIN)
    assert resp.status_int == 404
    assert error(data)["code"] == "cs2os.PlanNotFound"


@pytest.mark.parametrize("body,words", [
    ({"plan": {"vms": ["a"]}}, "body/plan: 'name' is a required property"),
    ({"plan": {"name": "p", "vms": ["a"], "defaults": {"source": "b"}}},
     "Additional properties are not allowed"),
    ({"plan": {"name": "p", "selector": {}}}, "body/plan/selector"),
    ({"plan": {"name": "p", "vms": []}}, "body/plan/vms: [] should be "
     "non-empty"),
    ({"plan": {"name": "p"}}, "body/plan: {'name': 'p'} is not valid"),
    ({"plan": {"name": "p", "vms": ["a"], "defaults": {
        "cutover": "manual"}}}, "body/plan/defaults: cutover and "
     "cutover_method apply to warm and live migrations only (mode is "
     "cold)"),
    ({"plan": {"name": "p", "vms": [{"vm": "a", "overrides": {
        "cutover": "manual"}}], "defaults": {"mode": "warm"}}},
     "body/plan/vms/0"),
    ({"plan": {"name": "p", "selector": {"tag": "wave"}}},
     "'wave' must be key=value"),
])
def test_a_bad_plan_is_a_400_naming_the_problem(plan_app, body, words):
    resp, data = call(plan_app[0], "POST", "/v1/plans", body, ADMIN)
    assert resp.status_int == 400, data
    assert words in error(data)["detail"]


def test_a_selector_that_matches_nothing_is_a_404(config, db):
    mgr = manager.ConductorManager(
        db, types.SimpleNamespace(submit=None), select_vms=lambda s: [])
    config.set_override("auth_strategy", "noauth", group="api")
    resp, data = call(api_app.build(config, mgr), "POST", "/v1/plans", {
        "plan": {"name": "p", "selector": {"zone": "z9", "tag": "a=b"}}},
        ADMIN)
    assert resp.status_int == 404
    assert error(data)["detail"] == (
        "No CloudStack VM matches the selector tag=a=b, zone=z9")


def test_the_conductors_plan_errors_over_rpc_keep_their_status(
        app, conductor):
    # Plan errors are common/exception.py's: oslo.messaging re-creates
    # them on this side (common/rpc.py ALLOWED_EXMODS), the status is
    # their code.
    conductor.raises = exception.PlanStateConflict(
        plan_id="x", state="done", action="start")
    resp, data = call(app, "POST", "/v1/plans/%s/action" % MID,
                      {"start": {}}, ADMIN)
    assert resp.status_int == 409
    assert error(data) == dict(error(data), code="cs2os.PlanStateConflict",
                               detail="Plan x is done: cannot start")
    conductor.raises = exception.PlanNotFound(plan_id=MID)
    resp, data = call(app, "GET", "/v1/plans/%s" % MID, None, ADMIN)
    assert (resp.status_int, error(data)["code"]) == (404,
                                                       "cs2os.PlanNotFound")
    conductor.raises = messaging.RemoteError("KeyError", "x", "tb")
    resp, _ = call(app, "GET", "/v1/plans/%s" % MID, None, ADMIN)
    assert resp.status_int == 500
    resp, data = call(app, "GET", "/v1/plans/not-a-uuid", None, ADMIN)
    assert resp.status_int == 404


@pytest.mark.parametrize("method,path,rule", [
    ("POST", "/v1/plans", "cs2os:plan:create"),
    ("GET", "/v1/plans", "cs2os:plan:list"),
    ("GET", "/v1/plans/%s" % MID, "cs2os:plan:get"),
    ("DELETE", "/v1/plans/%s" % MID, "cs2os:plan:delete"),
    ("POST", "/v1/plans/%s/action" % MID,
     "any of cs2os:plan:validate, cs2os:plan:start, cs2os:plan:cancel, "
     "cs2os:plan:retry"),
])
def test_plans_are_admin_only_and_checked_before_the_body_is_read(
        config, conductor, method, path, rule):
    # /v1/plans is API 1.10: no header (1.0) would be a 404.
    resp, data, body = _as_member(config, conductor, method, path, DEEP,
                                  {"OpenStack-API-Version": "cs2os 1.10"})
    assert resp.status_int == 403
    assert error(data)["detail"] == \
        "Policy does not allow %s to be performed" % rule
    assert not body.touched and conductor.calls == []


def test_a_plans_migrations_are_listed_by_plan_id(plan_app):
    app, _ = plan_app
    _, data = call(app, "POST", "/v1/plans", {"plan": {
        "name": "p", "vms": ["web-1"]}}, ADMIN)
    plan_id = data["plan"]["id"]
    call(app, "POST", "/v1/plans/%s/action" % plan_id, {"start": {}}, ADMIN)
    resp, data = call(app, "GET", "/v1/migrations?plan_id=%s" % plan_id,
                      None, ADMIN)
    assert resp.status_int == 200
    assert [m["source_ref"] for m in data["migrations"]] == ["web-1"]
    _, data = call(app, "GET", "/v1/migrations?plan_id=%s" % MID, None,
                   ADMIN)
    assert data["migrations"] == []
