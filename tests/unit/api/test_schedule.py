"""start_at, cutover_window, a plan's limits and its event log through the
WSGI application (API 1.12), in front of a real conductor manager."""

from tests.unit.api.harness import ADMIN
from tests.unit.api.harness import call
from tests.unit.api.harness import error
from tests.unit.api.test_plans import plan_app  # noqa: F401

T1, T2 = "2030-01-01T02:00:00Z", "2030-01-01T04:00:00Z"
V11 = dict(ADMIN, **{"OpenStack-API-Version": "cs2os 1.11"})


def test_a_plan_with_a_start_time_and_limits_and_its_events(
        plan_app):  # noqa: F811
    app, submitted = plan_app
    resp, data = call(app, "POST", "/v1/plans", {"plan": {
        "name": "w", "vms": ["web-1"], "start_at": "2030-01-01T03:00:00+01:00",
        "limits": {"max_per_kvm_host": 2}}}, ADMIN)
    assert resp.status_int == 201, data
    plan = data["plan"]
    assert plan["defaults"] == {"start_at": T1}
    assert plan["limits"] == {"max_per_kvm_host": 2}
    url = "/v1/plans/%s" % plan["id"]
    call(app, "POST", url + "/action", {"start": {}}, ADMIN)
    resp, data = call(app, "GET", url, None, ADMIN)
    assert [e["kind"] for e in data["plan"]["events"]] == [
        "created", "validated", "started", "migration_created"]
    (row,) = data["plan"]["vms"]
    resp, data = call(app, "GET", "/v1/migrations/%s" % row["migration_id"],
                      None, ADMIN)
    assert data["migration"]["start_at"] == T1
    # An older API version neither takes nor shows them.
    resp, data = call(app, "GET", url, None, V11)
    assert "events" not in data["plan"] and "limits" not in data["plan"]
    resp, data = call(app, "POST", "/v1/plans", {"plan": {
        "name": "w", "vms": ["web-1"], "limits": {"max_in_flight": 1}}},
        V11)
    assert resp.status_int >= 400 and "limits" in error(data)["detail"]


def test_a_window_is_refused_for_a_cold_migration_and_a_bad_limit(
        plan_app):  # noqa: F811
    app, _ = plan_app
    resp, data = call(app, "POST", "/v1/migrations", {"migration": {
        "source": "web-1", "cutover_window": {"start": T1, "end": T2}}},
        ADMIN)
    assert resp.status_int == 400
    assert "cutover_window applies to warm migrations only" in \
        error(data)["detail"]
    resp, data = call(app, "POST", "/v1/plans", {"plan": {
        "name": "w", "vms": ["web-1"], "limits": {"max_in_flight": -1}}},
        ADMIN)
    assert resp.status_int == 400
    assert "limits/max_in_flight" in error(data)["detail"]
