"""cs2os-api: routing, validation, policy and error bodies, in process.

The conductor behind the API is a recording stand-in here; the real chain
(cs2os-api process -> RabbitMQ -> cs2os-conductor, Keystone tokens, the
openstack CLI) runs in tests/functional/test_api.py and tests/e2e.
"""

import json
import types
import uuid

import oslo_messaging as messaging
import pytest
import webob
from keystonemiddleware import opts as ksm_opts
from oslo_config import cfg

from cs2os_agent import conf as cs2os_conf
from cs2os_agent.api import app as api_app
from cs2os_agent.api import policy
from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from cs2os_agent.db import api as db_api
from cs2os_agent.db import migration as db_migration

MID = "5b0c1f9e-4a41-4c1e-9d59-1d2c1a1e2f30"


def _record(**values):
    record = {"id": MID, "state": "queued", "step": "validate",
              "mode": "cold", "source_ref": "web-1", "bytes_done": 0,
              "bytes_total": 0, "rate_bps": 0, "result": {},
              "resources": {}, "lease_until": "2026-11-26T00:00:00",
              "conductor": "ctl-1", "options": {"x": 1}, "events": [
                  {"created_at": "2026-11-26T00:00:00", "step": "validate",
                   "kind": "info", "message": "queued"}]}
    record.update(values)
    return record


class RecordingConductor:
    """Answers like ConductorAPI and remembers each call."""

    def __init__(self):
        self.calls = []
        self.raises = None
        self.records = [_record()]

    def _answer(self, name, context, **kwargs):
        self.calls.append((name, context, kwargs))
        if self.raises is not None:
            raise self.raises
        if name == "list_migrations":
            return self.records
        return _record(**({"state": "cancelling"} if name ==
                          "cancel_migration" else {}))

    def __getattr__(self, name):
        # The first positional argument is "arg", any further ones "args".
        return lambda context, *args, **kwargs: self._answer(
            name, context, **dict({"arg": args[0]} if args else {},
                                  **dict({"args": args[1:]}
                                         if len(args) > 1 else {},
                                         **kwargs)))


@pytest.fixture
def config():
    conf = cfg.ConfigOpts()
    for module in cs2os_conf.ALL_MODULES:
        module.register_opts(conf)
    conf([], project="cs2os", default_config_files=[])
    policy.reset()
    policy.init(conf)
    yield conf
    policy.reset()
    # Option groups are shared between ConfigOpts objects: overrides
    # would leak into the next test (and into the global CONF).
    conf.reset()


@pytest.fixture
def conductor():
    return RecordingConductor()


@pytest.fixture
def app(config, conductor):
    config.set_override("auth_strategy", "noauth", group="api")
    return api_app.build(config, conductor)


def _call(app, method, path, body=None, headers=None,
          content_type="application/json"):
    req = webob.Request.blank(path, method=method,
                              base_url="http://api.test:9877")
    if body is not None:
        req.body = body if isinstance(body, bytes) else \
            json.dumps(body).encode()
        req.content_type = content_type
    for name, value in (headers or {}).items():
        req.headers[name] = value
    resp = req.get_response(app)
    data = json.loads(resp.body) if resp.body else None
    return resp, data


def _error(data):
    (error,) = data["errors"]
    return error


def test_versions_answer_without_a_token(config, conductor):
    # keystone auth and no token at all: the root still answers.
    app = api_app.build(config, conductor)
    resp, data = _call(app, "GET", "/")
    assert resp.status_int == 200
    assert data["versions"][0]["id"] == "v1"
    assert data["versions"][0]["links"][0]["href"] == \
        "http://api.test:9877/v1/"


def test_keystone_auth_refuses_a_request_without_token(config, conductor):
    for group, opts in ksm_opts.list_auth_token_opts():
        config.register_opts(opts, group=group)
    # A missing token is refused without asking Keystone, with a pointer
    # to where tokens come from.
    config.set_override("www_authenticate_uri", "http://127.0.0.1:5000",
                        group="keystone_authtoken")
    app = api_app.build(config, conductor)
    resp, _ = _call(app, "GET", "/v1/migrations")
    assert resp.status_int == 401
    assert resp.headers["WWW-Authenticate"] == \
        'Keystone uri="http://127.0.0.1:5000"'
    assert conductor.calls == []


def test_create_sends_the_request_and_the_callers_identity(app, conductor):
    resp, data = _call(app, "POST", "/v1/migrations",
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


@pytest.mark.parametrize("body,detail", [
    ({}, "'migration' is a required property"),
    ({"migration": {}}, "body/migration: 'source' is a required property"),
    ({"migration": {"source": "  "}}, "body/migration/source"),
    ({"migration": {"source": "a", "mode": "hot"}},
     "body/migration/mode: 'hot' is not one of ['cold', 'warm']"),
    ({"migration": {"source": "a", "delete_source": "yes"}},
     "body/migration/delete_source: 'yes' is not of type 'boolean'"),
    ({"migration": {"source": "a", "colour": "red"}},
     "('colour' was unexpected); allowed: cutover, cutover_method, "
     "delete_source, drop_unmapped_nics, flavor, host, mode, networks, "
     "source"),
    ({"migration": {"source": "a", "mode": "warm", "cutover": "later"}},
     "body/migration/cutover: 'later' is not one of ['auto', 'manual']"),
    ({"migration": {"source": "a", "mode": "warm",
                    "cutover_method": "reboot"}},
     "body/migration/cutover_method: 'reboot' is not one of ['shutdown', "
     "'force']"),
    ({"migration": {"source": "a", "mode": "warm", "cutover_method": 1}},
     "body/migration/cutover_method: 1 is not of type 'string'"),
    ({"migration": {"source": "a", "networks": {"guest": ""}}},
     "body/migration/networks/guest"),
    ({"migration": {"source": "a", "networks": ["guest"]}},
     "body/migration/networks: ['guest'] is not of type 'object'"),
    ([], "body: [] is not of type 'object'"),
])
def test_create_rejects_bad_bodies_naming_the_field(app, conductor, body,
                                                     detail):
    resp, data = _call(app, "POST", "/v1/migrations", body)
    assert resp.status_int == 400
    assert detail in _error(data)["detail"]
    assert _error(data)["code"] == "cs2os.InvalidRequest"
    assert _error(data)["request_id"].startswith("req-")
    assert conductor.calls == []


def test_create_rejects_non_json(app, conductor):
    resp, data = _call(app, "POST", "/v1/migrations", b"{source: 1")
    assert resp.status_int == 400
    assert "not valid JSON" in _error(data)["detail"]
    resp, data = _call(app, "POST", "/v1/migrations", b"source=1",
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_int == 415
    assert "application/x-www-form-urlencoded" in _error(data)["detail"]
    assert conductor.calls == []


def test_conductor_verdicts_keep_their_status(app, conductor):
    conductor.raises = exception.Invalid(
        reason="cutover applies to warm migrations only (mode is cold)")
    resp, data = _call(app, "POST", "/v1/migrations",
                       {"migration": {"source": "a", "cutover": "manual"}})
    assert resp.status_int == 400
    assert _error(data)["detail"] == (
        "Invalid request: cutover applies to warm migrations only (mode is "
        "cold)")
    assert _error(data)["code"] == "cs2os.Invalid"


def test_list_passes_filters_and_links_the_next_page(app, conductor, config):
    config.set_override("max_limit", 1, group="api")
    app = api_app.build(config, conductor)
    resp, data = _call(app, "GET",
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
    resp, data = _call(app, "GET", "/v1/migrations?limit=5")
    assert resp.status_int == 200
    assert len(data["migrations"]) == 1
    assert "migrations_links" not in data


@pytest.mark.parametrize("query,detail", [
    ("colour=red", "unknown query parameter(s) colour; allowed: host, "
     "limit, marker, source, state"),
    ("limit=ten", "query parameter limit must be an integer, not 'ten'"),
    ("limit=0", "query parameter limit: 0 is less than the minimum of 1"),
    ("state=done", "query parameter state: 'done' is not one of"),
    ("marker=xyz", "query parameter marker: 'xyz' is not a 'uuid'"),
    ("state=failed&state=queued", "query parameter state is given 2 times"),
])
def test_list_rejects_bad_queries(app, conductor, query, detail):
    resp, data = _call(app, "GET", "/v1/migrations?" + query)
    assert resp.status_int == 400
    assert detail in _error(data)["detail"]
    assert conductor.calls == []


def test_list_with_an_unknown_marker_is_a_client_error(app, conductor):
    marker = str(uuid.uuid4())
    conductor.raises = exception.MigrationNotFound(migration_id=marker)
    resp, data = _call(app, "GET", "/v1/migrations?marker=" + marker)
    assert resp.status_int == 400
    assert _error(data)["detail"] == \
        "marker %s is not a known migration" % marker


def test_show_unknown_ids(app, conductor):
    resp, data = _call(app, "GET", "/v1/migrations/not-a-uuid")
    assert resp.status_int == 404
    assert _error(data)["code"] == "cs2os.MigrationNotFound"
    assert conductor.calls == []
    conductor.raises = exception.MigrationNotFound(migration_id=MID)
    resp, data = _call(app, "GET", "/v1/migrations/" + MID)
    assert resp.status_int == 404
    assert _error(data)["detail"] == "Migration %s not found" % MID


def test_show_returns_the_record_with_events(app, conductor):
    resp, data = _call(app, "GET", "/v1/migrations/" + MID)
    assert resp.status_int == 200
    assert conductor.calls[0][0] == "get_migration"
    assert conductor.calls[0][2] == {"arg": MID}
    assert data["migration"]["id"] == MID
    assert data["migration"]["events"][0]["step"] == "validate"


@pytest.mark.parametrize("action,method", [("cancel", "cancel_migration"),
                                           ("retry", "retry_migration"),
                                           ("cutover", "cutover_migration")])
def test_actions(app, conductor, action, method):
    resp, data = _call(app, "POST", "/v1/migrations/%s/action" % MID,
                       {action: {}})
    assert resp.status_int == 202
    assert [c[0] for c in conductor.calls] == [method]
    assert data["migration"]["id"] == MID


def test_create_sends_the_cutover_method(app, conductor):
    resp, data = _call(app, "POST", "/v1/migrations",
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
    resp, data = _call(app, "POST", "/v1/migrations/%s/action" % MID, body)
    assert resp.status_int == 202
    ((name, _, kwargs),) = conductor.calls
    assert (name, kwargs) == ("cutover_migration",
                              {"arg": MID, "args": (method,)})


@pytest.mark.parametrize("body,detail", [
    ({}, "exactly one action is expected, one of: cancel, cutover, retry"),
    ({"cutover": {"force": True}}, "body/cutover: Additional properties"),
    ({"cutover": {"method": "reboot"}},
     "body/cutover/method: 'reboot' is not one of ['shutdown', 'force']"),
    ({"cutover": {"method": None}},
     "body/cutover/method: None is not of type 'string'"),
    ({"cutover": {"method": "force", "now": True}},
     "body/cutover: Additional properties"),
    ({"cutover": "force"}, "body/cutover: 'force' is not of type 'object'"),
    ({"retry": {"method": "force"}}, "body/retry: Additional properties"),
    ({"cancel": {}, "retry": {}}, "exactly one action is expected"),
    ({"explode": {}}, "'explode' was unexpected"),
    ({"cancel": {"force": True}}, "body/cancel: Additional properties"),
])
def test_bad_actions(app, conductor, body, detail):
    resp, data = _call(app, "POST", "/v1/migrations/%s/action" % MID, body)
    assert resp.status_int == 400
    assert detail in _error(data)["detail"]
    assert conductor.calls == []


def test_state_conflict_is_409(app, conductor):
    conductor.raises = exception.MigrationStateConflict(
        migration_id=MID, state="succeeded", action="cancel")
    resp, data = _call(app, "POST", "/v1/migrations/%s/action" % MID,
                       {"cancel": {}})
    assert resp.status_int == 409
    assert _error(data)["detail"] == \
        "Migration %s is succeeded: cannot cancel" % MID


def test_a_silent_conductor_is_503(app, conductor):
    conductor.raises = messaging.MessagingTimeout("no reply")
    resp, data = _call(app, "GET", "/v1/migrations")
    assert resp.status_int == 503
    assert "cs2os-conductor did not answer within 30 s" in \
        _error(data)["detail"]


def test_unexpected_errors_are_500_without_internals(app, conductor):
    conductor.raises = KeyError("secret-internal-detail")
    resp, data = _call(app, "GET", "/v1/migrations")
    assert resp.status_int == 500
    assert "secret-internal-detail" not in resp.text
    assert _error(data)["code"] == "cs2os.InternalError"


def test_unknown_paths_and_methods(app):
    resp, data = _call(app, "GET", "/v2/migrations")
    assert resp.status_int == 404
    assert _error(data)["detail"] == "no resource at /v2/migrations"
    resp, data = _call(app, "DELETE", "/v1/migrations/" + MID)
    assert resp.status_int == 405
    assert resp.headers["Allow"] == "GET"


def test_policy_refuses_non_admins(config, conductor):
    # The context middleware behind a (stand-in) auth_token that
    # confirmed a member-only token.
    app = api_app.ContextMiddleware(api_app.Router(conductor, config))
    resp, data = _call(app, "POST", "/v1/migrations",
                       {"migration": {"source": "a"}},
                       headers={"X-Identity-Status": "Confirmed",
                                "X-User-Id": "u", "X-Project-Id": "p",
                                "X-Roles": "member,reader"})
    assert resp.status_int == 403
    assert _error(data)["detail"] == \
        "Policy does not allow cs2os:migration:create to be performed"
    assert conductor.calls == []


def test_policy_file_can_open_an_action(config, conductor, tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"cs2os:migration:list": "role:reader"\n')
    config.set_override("policy_file", str(policy_file),
                        group="oslo_policy")
    policy.reset()
    policy.init(config)
    app = api_app.ContextMiddleware(api_app.Router(conductor, config))
    headers = {"X-Identity-Status": "Confirmed", "X-User-Id": "u",
               "X-Project-Id": "p", "X-Roles": "reader"}
    resp, _ = _call(app, "GET", "/v1/migrations", headers=headers)
    assert resp.status_int == 200
    resp, _ = _call(app, "GET", "/v1/migrations/" + MID, headers=headers)
    assert resp.status_int == 403


def test_a_warm_record_shows_its_cutover(app, conductor):
    conductor._answer = lambda name, context, **kwargs: _record(
        mode="warm", options={"cutover": "manual", "cutover_method": "force",
                              "cutover_requested": {"by": "ops"}})
    resp, data = _call(app, "GET", "/v1/migrations/" + MID)
    shown = data["migration"]
    assert (shown["cutover"], shown["cutover_method"],
            shown["cutover_requested"]) == ("manual", "force", {"by": "ops"})
    # A record from before the method existed: the default, shutdown.
    conductor._answer = lambda name, context, **kwargs: _record(
        mode="warm", options={"cutover": "auto"})
    resp, data = _call(app, "GET", "/v1/migrations/" + MID)
    shown = data["migration"]
    assert (shown["cutover"], shown["cutover_method"],
            shown["cutover_requested"]) == ("auto", "shutdown", None)
    conductor._answer = lambda name, context, **kwargs: _record()
    resp, data = _call(app, "GET", "/v1/migrations/" + MID)
    assert "cutover" not in data["migration"]
    assert "cutover_method" not in data["migration"]


# -- through a real conductor manager (in process, SQLite) --------------------


@pytest.fixture
def manager_app(config, tmp_path):
    database = db_api.Database("sqlite:///%s" % (tmp_path / "c.sqlite"))
    db_migration.upgrade(database)
    mgr = manager.ConductorManager(
        database, types.SimpleNamespace(submit=lambda mid: None))
    config.set_override("auth_strategy", "noauth", group="api")
    return api_app.build(config, mgr), mgr


ADMIN = {"X-User-Id": "ops", "X-Project-Id": "p-7"}


@pytest.mark.parametrize("request_, shown", [
    ({"mode": "warm"}, "shutdown"),
    ({"mode": "warm", "cutover_method": "shutdown"}, "shutdown"),
    ({"mode": "warm", "cutover_method": "force"}, "force"),
])
def test_created_warm_migrations_show_their_cutover_method(
        manager_app, request_, shown):
    app, mgr = manager_app
    resp, data = _call(app, "POST", "/v1/migrations",
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
    resp, data = _call(app, "POST", "/v1/migrations",
                       {"migration": dict(request_, source="web-1")},
                       headers=ADMIN)
    assert resp.status_int == 400
    assert _error(data)["code"] == "cs2os.Invalid"
    assert _error(data)["detail"] == (
        "Invalid request: cutover_method applies to warm migrations only "
        "(mode is cold)")
    assert mgr.db.list_migrations() == []


def test_the_cutover_action_records_its_method(manager_app):
    app, mgr = manager_app
    _, data = _call(app, "POST", "/v1/migrations",
                    {"migration": {"source": "web-1", "mode": "warm",
                                   "cutover": "manual"}}, headers=ADMIN)
    mid = data["migration"]["id"]
    mgr.db.update_migration(mid, {"state": "running", "step": "ready"})
    path = "/v1/migrations/%s/action" % mid
    resp, data = _call(app, "POST", path, {"cutover": {"method": "force"}},
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
    resp, data = _call(app, "POST", path, {"cutover": {}}, headers=ADMIN)
    assert data["migration"]["cutover_requested"]["method"] == "force"
    resp, data = _call(app, "POST", path, {"cutover": {"method": "reboot"}},
                       headers=ADMIN)
    assert resp.status_int == 400
    record = mgr.db.get_migration(mid)
    assert record["options"]["cutover_requested"]["method"] == "force"
