"""API 1.15: mode live and live_fallback (common/microversions.py): a
value of a field can be newer than the field, and a request of an older
version that uses it is a 400 naming the version it needs."""

import pytest

from cs2os_agent.api import migrations
from cs2os_agent.common import microversions
from tests.unit.api.harness import ADMIN
from tests.unit.api.harness import call
from tests.unit.api.harness import error
from tests.unit.api.harness import make_record

V = microversions.Version


def _at(version):
    return dict(ADMIN, **{"OpenStack-API-Version": "cs2os %s" % version})


def test_live_is_1_15_and_its_keys():
    assert microversions.needs("migration.mode=live") == V(1, 15)
    assert microversions.needs("migration.live_fallback") == V(1, 15)
    # The other modes stay 1.0: only the new value is newer.
    assert microversions.body_features("migration", {"migration": {
        "source": "a", "mode": "warm"}}) == ["migration.source",
                                              "migration.mode"]
    assert "migration.mode=live" in microversions.body_features(
        "plan", {"plan": {"name": "p", "vms": [{"vm": "a", "overrides": {
            "mode": "live"}}]}})
    assert microversions.describe("migration.mode=live") == "mode live"
    assert microversions.too_new(V(1, 14), ["migration.mode",
                                           "migration.mode=live"]) == (
        "migration.mode=live", V(1, 15))


@pytest.mark.parametrize("body, what", [
    ({"source": "a", "mode": "live"}, "mode live"),
    ({"source": "a", "mode": "live", "live_fallback": True}, "mode live"),
])
def test_an_older_version_refuses_live(app, conductor, body, what):
    resp, data = call(app, "POST", "/v1/migrations", {"migration": body},
                      _at("1.14"))
    assert resp.status_int == 400
    assert error(data)["code"] == "cs2os.VersionTooOld"
    assert error(data)["detail"] == (
        "%s needs API version 1.15 (OpenStack-API-Version: cs2os 1.15); "
        "this request is version 1.14" % what)
    assert conductor.calls == []
    resp, _ = call(app, "POST", "/v1/migrations", {"migration": body},
                   _at("1.15"))
    assert resp.status_int == 202
    assert conductor.calls[-1][2]["arg"] == body


def test_a_plan_of_an_older_version_cannot_default_to_live(app, conductor):
    body = {"plan": {"name": "p", "vms": ["a"],
                     "defaults": {"mode": "live"}}}
    resp, data = call(app, "POST", "/v1/plans", body, _at("1.14"))
    assert resp.status_int == 400
    assert "mode live needs API version 1.15" in error(data)["detail"]


@pytest.mark.parametrize("body, detail", [
    ({"source": "a", "live_fallback": True},
     "body/migration: live_fallback applies to live migrations only (mode "
     "is cold)"),
    ({"source": "a", "mode": "warm", "live_fallback": False},
     "body/migration: live_fallback applies to live migrations only (mode "
     "is warm)"),
    ({"source": "a", "mode": "live", "keep_snapshots": True},
     "is not valid under any of the given schemas"),
    ({"source": "a", "mode": "live", "live_fallback": "yes"},
     "body/migration/live_fallback: 'yes' is not of type 'boolean'"),
])
def test_the_schema_refuses_live_fields_out_of_place(app, conductor, body,
                                                     detail):
    resp, data = call(app, "POST", "/v1/migrations", {"migration": body},
                      _at("1.15"))
    assert resp.status_int == 400
    assert detail in error(data)["detail"]
    assert conductor.calls == []


def test_the_view_shows_live_fallback_from_1_15():
    record = make_record(mode="warm", options={"live_fallback": True})
    assert migrations.view(record)["live_fallback"] is True
    assert "live_fallback" in microversions.hidden(V(1, 14), "migration")
    assert "live_fallback" not in microversions.hidden(V(1, 15),
                                                       "migration")
