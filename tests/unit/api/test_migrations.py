"""The /v1/migrations handlers: what reaches the conductor and what a
caller sees of its answer (api/migrations.py)."""

import uuid

import pytest

from cs2os_agent.api import app as api_app
from cs2os_agent.common import exception
from tests.unit.api.harness import ADMIN
from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error
from tests.unit.api.harness import make_record


def test_create_sends_the_request_and_the_callers_identity(app, conductor):
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-1", "host": "cmp-1",
                                     "flavor": None,
                                     "delete_source": True}},
                      headers={"X-User-Id": "u-42",
                               "X-Project-Id": "p-7"})
    assert resp.status_int == 202
    assert resp.location == "http://api.test:9877/v1/migrations/" + MID
    ((name, context, kwargs),) = conductor.calls
    assert name == "create_migration"
    # null fields are left out: the conductor applies its defaults.
    assert kwargs == {"arg": {"source": "web-1", "host": "cmp-1",
                              "delete_source": True}}
    assert (context.user_id, context.project_id) == ("u-42", "p-7")
    assert context.request_id == resp.headers["X-OpenStack-Request-ID"]
    # Conductor bookkeeping is not shown.
    assert "lease_until" not in data["migration"]
    assert "options" not in data["migration"]
    assert data["migration"]["events"][0]["message"] == "queued"


@pytest.mark.parametrize("key", ["5b0c1f9e-retry-1", "a b", "~" * 255, "x"])
def test_the_idempotency_key_goes_to_the_conductor(app, conductor, key):
    resp, _ = call(app, "POST", "/v1/migrations",
                   {"migration": {"source": "web-1"}},
                   headers={"Idempotency-Key": key})
    assert resp.status_int == 202
    ((name, _, kwargs),) = conductor.calls
    assert (name, kwargs) == ("create_migration", {"arg": {
        "source": "web-1", "idempotency_key": key}})


def test_list_passes_filters_and_links_the_next_page(app, conductor, config):
    config.set_override("max_limit", 1, group="api")
    app = api_app.build(config, conductor)
    resp, data = call(app, "GET",
                      "/v1/migrations?state=failed&host=cmp-1&limit=50")
    assert resp.status_int == 200
    ((name, _, kwargs),) = conductor.calls
    assert name == "list_migrations"
    # The limit is cut to [api] max_limit.
    assert kwargs == {"arg": {"state": "failed", "host": "cmp-1"},
                      "limit": 1, "marker": None}
    assert "events" not in data["migrations"][0]
    assert data["migrations_links"] == [{
        "rel": "next",
        "href": "http://api.test:9877/v1/migrations?host=cmp-1&limit=1"
                "&marker=%s&state=failed" % MID}]


def test_list_without_more_pages_has_no_link(app, conductor):
    resp, data = call(app, "GET", "/v1/migrations?limit=5")
    assert resp.status_int == 200
    assert len(data["migrations"]) == 1
    assert "migrations_links" not in data


def test_list_with_an_unknown_marker_is_a_client_error(app, conductor):
    marker = str(uuid.uuid4())
    conductor.raises = exception.MigrationNotFound(migration_id=marker)
    resp, data = call(app, "GET", "/v1/migrations?marker=" + marker)
    assert resp.status_int == 400
    assert error(data)["detail"] == \
        "marker %s is not a known migration" % marker


def test_show_unknown_ids(app, conductor):
    resp, data = call(app, "GET", "/v1/migrations/not-a-uuid")
    assert resp.status_int == 404
    assert error(data)["code"] == "cs2os.MigrationNotFound"
    assert conductor.calls == []
    conductor.raises = exception.MigrationNotFound(migration_id=MID)
    resp, data = call(app, "GET", "/v1/migrations/" + MID)
    assert resp.status_int == 404
    assert error(data)["detail"] == "Migration %s not found" % MID


def test_show_returns_the_record_with_events(app, conductor):
    resp, data = call(app, "GET", "/v1/migrations/" + MID)
    assert resp.status_int == 200
    assert conductor.calls[0][0] == "get_migration"
    assert conductor.calls[0][2] == {"arg": MID}
    assert data["migration"]["id"] == MID
    assert data["migration"]["events"][0]["step"] == "validate"


@pytest.mark.parametrize("action,method", [("cancel", "cancel_migration"),
                                           ("retry", "retry_migration"),
                                           ("cutover", "cutover_migration")])
def test_actions(app, conductor, action, method):
    resp, data = call(app, "POST", "/v1/migrations/%s/action" % MID,
                      {action: {}})
    assert resp.status_int == 202
    # The record first: may this caller act on it (its target project)?
    assert [c[0] for c in conductor.calls] == ["get_migration", method]
    assert data["migration"]["id"] == MID


# -- warm migrations: the cutover --------------------------------------------


def test_create_sends_the_cutover_method(app, conductor):
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-1", "mode": "warm",
                                     "cutover": "manual",
                                     "cutover_method": "force"}})
    assert resp.status_int == 202
    ((name, _, kwargs),) = conductor.calls
    assert (name, kwargs) == ("create_migration", {"arg": {
        "source": "web-1", "mode": "warm", "cutover": "manual",
        "cutover_method": "force"}})


@pytest.mark.parametrize("body, method", [
    ({"cutover": {}}, None),
    ({"cutover": {"method": "force"}}, "force"),
    ({"cutover": {"method": "shutdown"}}, "shutdown"),
])
def test_cutover_action_passes_the_method(app, conductor, body, method):
    resp, data = call(app, "POST", "/v1/migrations/%s/action" % MID, body)
    assert resp.status_int == 202
    (_, (name, _, kwargs)) = conductor.calls
    assert (name, kwargs) == ("cutover_migration",
                              {"arg": MID, "args": (method,)})


def test_a_warm_record_shows_its_cutover(app, conductor):
    conductor._answer = lambda name, context, **kwargs: make_record(
        mode="warm", options={"cutover": "manual", "cutover_method": "force",
                              "cutover_requested": {"by": "ops"}})
    resp, data = call(app, "GET", "/v1/migrations/" + MID)
    shown = data["migration"]
    assert (shown["cutover"], shown["cutover_method"],
            shown["cutover_requested"]) == ("manual", "force", {"by": "ops"})
    # A record from before the method existed: the default, shutdown.
    conductor._answer = lambda name, context, **kwargs: make_record(
        mode="warm", options={"cutover": "auto"})
    resp, data = call(app, "GET", "/v1/migrations/" + MID)
    shown = data["migration"]
    assert (shown["cutover"], shown["cutover_method"],
            shown["cutover_requested"]) == ("auto", "shutdown", None)
    conductor._answer = lambda name, context, **kwargs: make_record()
    resp, data = call(app, "GET", "/v1/migrations/" + MID)
    assert "cutover" not in data["migration"]
    assert "cutover_method" not in data["migration"]


@pytest.mark.parametrize("options, shown", [
    ({"config_drive": True}, True),
    ({"config_drive": False}, False),
    # A record from before the field existed: none.
    ({}, False),
    (None, False),
])
def test_a_record_shows_its_config_drive(app, conductor, options, shown):
    conductor.values = {"options": options}
    conductor.records = [make_record(options=options)]
    resp, data = call(app, "GET", "/v1/migrations/" + MID)
    assert resp.status_int == 200
    assert data["migration"]["config_drive"] is shown
    resp, data = call(app, "GET", "/v1/migrations")
    assert resp.status_int == 200
    assert data["migrations"][0]["config_drive"] is shown


def test_create_passes_the_config_drive_to_the_conductor(app, conductor):
    resp, _ = call(app, "POST", "/v1/migrations",
                   {"migration": {"source": "web-1", "config_drive": True}})
    assert resp.status_int == 202
    ((name, _, kwargs),) = conductor.calls
    assert (name, kwargs) == ("create_migration", {"arg": {
        "source": "web-1", "config_drive": True}})


# -- through a real conductor manager (in process, SQLite) --------------------


@pytest.mark.parametrize("request_, shown", [
    ({"mode": "warm"}, "shutdown"),
    ({"mode": "warm", "cutover_method": "shutdown"}, "shutdown"),
    ({"mode": "warm", "cutover_method": "force"}, "force"),
])
def test_created_warm_migrations_show_their_cutover_method(
        manager_app, request_, shown):
    app, mgr = manager_app
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": dict(request_, source="web-1")},
                      headers=ADMIN)
    assert resp.status_int == 202
    assert data["migration"]["cutover_method"] == shown
    record = mgr.db.get_migration(data["migration"]["id"])
    assert record["options"]["cutover_method"] == shown


@pytest.mark.parametrize("request_", [
    {"cutover_method": "force"},
    {"mode": "cold", "cutover_method": "shutdown"},
])
def test_a_cold_migration_has_no_cutover_method(manager_app, request_):
    app, mgr = manager_app
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": dict(request_, source="web-1")},
                      headers=ADMIN)
    # The API's schema says it first (the conductor would say it too).
    assert resp.status_int == 400
    assert error(data)["code"] == "cs2os.InvalidRequest"
    assert error(data)["detail"] == (
        "body/migration: cutover and cutover_method apply to warm and "
        "live migrations only (mode is cold)")
    assert mgr.db.list_migrations() == []


def test_the_cutover_action_records_its_method(manager_app):
    app, mgr = manager_app
    _, data = call(app, "POST", "/v1/migrations",
                   {"migration": {"source": "web-1", "mode": "warm",
                                  "cutover": "manual"}}, headers=ADMIN)
    mid = data["migration"]["id"]
    mgr.db.update_migration(mid, {"state": "running", "step": "ready"})
    path = "/v1/migrations/%s/action" % mid
    resp, data = call(app, "POST", path, {"cutover": {"method": "force"}},
                      headers=ADMIN)
    assert resp.status_int == 202
    shown = data["migration"]
    # The method the cutover runs with: the action's overrides the
    # request's (which stays recorded as it was asked).
    assert shown["cutover_method"] == "force"
    assert mgr.db.get_migration(mid)["options"]["cutover_method"] == \
        "shutdown"
    assert shown["cutover_requested"]["method"] == "force"
    assert shown["cutover_requested"]["by"] == "ops"
    resp, data = call(app, "POST", path, {"cutover": {}}, headers=ADMIN)
    assert data["migration"]["cutover_requested"]["method"] == "force"
    resp, data = call(app, "POST", path, {"cutover": {"method": "reboot"}},
                      headers=ADMIN)
    assert resp.status_int == 400
    record = mgr.db.get_migration(mid)
    assert record["options"]["cutover_requested"]["method"] == "force"


# -- the target project -------------------------------------------------------


def test_create_sends_the_project(app, conductor):
    resp, _ = call(app, "POST", "/v1/migrations",
                   {"migration": {"source": "web-1", "project": "tenant-a"}})
    assert resp.status_int == 202
    ((name, _, kwargs),) = conductor.calls
    assert (name, kwargs) == ("create_migration", {"arg": {
        "source": "web-1", "project": "tenant-a"}})


def test_the_view_shows_both_projects(app, conductor):
    conductor.values = {"project_id": "ops", "target_project_id": "t-a"}
    _, data = call(app, "GET", "/v1/migrations/" + MID)
    shown = data["migration"]
    assert (shown["project_id"], shown["target_project_id"]) == ("ops",
                                                                 "t-a")
    # Not resolved yet: null, not missing.
    conductor.records = [make_record()]
    _, data = call(app, "GET", "/v1/migrations")
    assert data["migrations"][0]["target_project_id"] is None


def test_a_created_migration_takes_its_project_to_the_conductor(
        manager_app):
    app, mgr = manager_app
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-1",
                                     "project": " tenant-a "}},
                      headers=ADMIN)
    assert resp.status_int == 202
    # Resolved by the first step, which has not run.
    assert data["migration"]["target_project_id"] is None
    assert data["migration"]["project_id"] == "p-7"
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-2",
                                     "project": "a\u200bb"}},
                      headers=ADMIN)
    # A name JSON Schema lets through; the conductor names the field.
    assert resp.status_int == 400
    assert error(data)["code"] == "cs2os.Invalid"
    assert "project" in error(data)["detail"]
