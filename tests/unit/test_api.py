"""cs2os-api: routing, validation, policy and error bodies, in process.

The conductor behind the API is a recording stand-in here; the real chain
(cs2os-api process -> RabbitMQ -> cs2os-conductor, Keystone tokens, the
openstack CLI) runs in tests/functional/test_api.py and tests/e2e.
"""

import io
import json
import types
import uuid

import openapi_spec_validator
import oslo_messaging as messaging
import pytest
import webob
from keystonemiddleware import opts as ksm_opts
from oslo_config import cfg

from cs2os_agent import conf as cs2os_conf
from cs2os_agent.api import app as api_app
from cs2os_agent.api import openapi
from cs2os_agent.api import policy
from cs2os_agent.api import schemas
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
    ({"migration": {"source": "a", "cutover": "manual"}},
     "body/migration: cutover and cutover_method apply to warm migrations "
     "only (mode is cold)"),
    ({"migration": {"source": "a", "mode": "cold", "cutover_method": "force"}},
     "(mode is cold)"),
    # A field's own mistake is named before the cross-field rule.
    ({"migration": {"source": "a", "mode": "hot", "cutover": "manual"}},
     "body/migration/mode: 'hot' is not one of ['cold', 'warm']"),
    ({"migration": {"source": "web\x001"}},
     "body/migration/source: 'web\\x001' must be a non-blank string of at "
     "most 255 characters without control characters"),
    ({"migration": {"source": "a", "networks": {"": "n"}}},
     "body/migration/networks: key '' should be non-empty"),
    ({"migration": {"source": "a", "networks": {"g\n": "n"}}},
     "body/migration/networks: key 'g\\n' must be a non-blank string"),
    ("migration", "body: 'migration' is not of type 'object'"),
    (b"null", "body: None is not of type 'object'"),
    (7, "body: 7 is not of type 'object'"),
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
        reason="source (the CloudStack VM id or name) is required")
    resp, data = _call(app, "POST", "/v1/migrations",
                       {"migration": {"source": "a"}})
    assert resp.status_int == 400
    assert _error(data)["detail"] == (
        "Invalid request: source (the CloudStack VM id or name) is "
        "required")
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
    # The API's schema says it first (the conductor would say it too).
    assert resp.status_int == 400
    assert _error(data)["code"] == "cs2os.InvalidRequest"
    assert _error(data)["detail"] == (
        "body/migration: cutover and cutover_method apply to warm "
        "migrations only (mode is cold)")
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


# -- client mistakes are 4xx, never 5xx ---------------------------------------

DEEP = b"[" * 100000  # under the body size limit; was a RecursionError


@pytest.mark.parametrize("method,path,body,content_type,status,detail", [
    ("POST", "/v1/migrations", DEEP, "application/json", 400,
     "the request body nests arrays or objects deeper than 32 levels"),
    ("POST", "/v1/migrations/%s/action" % MID, b'{"a":' * 20000,
     "application/json", 400,
     "the request body nests arrays or objects deeper than 32 levels"),
    # 32 levels parse; only the schema has something to say.
    ("POST", "/v1/migrations", b"[" * 32 + b"]" * 32, "application/json",
     400, "body: [[[[[[[["),
    ("GET", "/v1/migrations?host=%C3", None, None, 400,
     "the query string is not UTF-8 once percent-decoded: host=%C3"),
    ("GET", "/v1/migrations?%C3=1", None, None, 400,
     "the query string is not UTF-8 once percent-decoded: %C3=1"),
    ("GET", "/v1/migrations/%FF", None, None, 400,
     "the path is not UTF-8 once percent-decoded: /v1/migrations/%FF"),
    ("GET", "/v1/migrations%0A", None, None, 404,
     "no resource at /v1/migrations\n"),
    ("POST", "/v1/migrations", b'{"migration": {"source": "\xff"}}',
     "application/json", 400, "the request body is not UTF-8: "),
    ("POST", "/v1/migrations", b'{"migration": {"source": "\\ud800"}}',
     "application/json", 400, "the request body has a string that is not "
     "Unicode text (a lone UTF-16 surrogate '\\ud800')"),
    ("POST", "/v1/migrations", b'{"migration": NaN}', "application/json",
     400, "the request body is not valid JSON: NaN is not a JSON value"),
    ("POST", "/v1/migrations", b'[-Infinity]', "application/json", 400,
     "the request body is not valid JSON: -Infinity is not a JSON value"),
    ("POST", "/v1/migrations", b"[" + b"9" * 5000 + b"]", "application/json",
     400, "the request body is not valid JSON: a number has more than 4300 "
     "digits"),
    ("POST", "/v1/migrations", b"", "application/json", 400,
     "the request body is not valid JSON"),
    ("POST", "/v1/migrations", b"{}", "application/json; charset=latin-1",
     415, "the request body must be UTF-8 JSON, not charset latin-1"),
    ("POST", "/v1/migrations", b"{}", "text/plain", 415,
     "the request body must be application/json, not text/plain"),
    ("GET", "/v1/migrations?limit=1_0", None, None, 400,
     "query parameter limit must be an integer, not '1_0'"),
    ("GET", "/v1/migrations?limit=%EF%BC%91", None, None, 400,
     "query parameter limit must be an integer, not '\uff11'"),
    ("GET", "/v1/migrations?limit=+5", None, None, 400,
     "query parameter limit must be an integer, not ' 5'"),
    ("GET", "/v1/migrations?limit=" + "9" * 19, None, None, 400,
     "query parameter limit has more than 18 digits"),
    ("GET", "/v1/migrations?source=%00", None, None, 400,
     "query parameter source: '\\x00' must be a non-blank string"),
    ("GET", "/v1/migrations?" + "&".join(["state=failed"] * 101), None,
     None, 400, "the query string has more than 100 parameters"),
])
def test_client_mistakes_are_4xx_naming_the_problem(
        app, conductor, method, path, body, content_type, status, detail):
    resp, data = _call(app, method, path, body, content_type=content_type)
    assert resp.status_int == status
    assert _error(data)["detail"].startswith(detail)
    assert _error(data)["request_id"].startswith("req-")
    assert conductor.calls == []


@pytest.mark.parametrize("source", [
    # Brackets, quotes and backslashes inside strings are no nesting.
    "[" * 200, '"[' * 100, "\\[" * 100, "}]" * 100 + "\\",
])
def test_brackets_in_strings_do_not_count_as_depth(app, conductor, source):
    resp, _ = _call(app, "POST", "/v1/migrations",
                    {"migration": {"source": source}})
    assert resp.status_int == 202
    assert conductor.calls[0][2] == {"arg": {"source": source}}


def test_media_types_are_case_insensitive(app, conductor):
    resp, _ = _call(app, "POST", "/v1/migrations",
                    b'{"migration": {"source": "a"}}',
                    content_type="Application/JSON; Charset=UTF-8")
    assert resp.status_int == 202


def _raw_request(path, body, **environ):
    req = webob.Request.blank(path, method="POST",
                              base_url="http://api.test:9877")
    req.environ.update(CONTENT_TYPE="application/json",
                       **{"wsgi.input": io.BytesIO(body)}, **environ)
    return req


def test_too_large_bodies_are_json_413s(app, conductor):
    too_large = b" " * 200000
    # Announced in Content-Length: oslo's limiter, our JSON.
    req = _raw_request("/v1/migrations", too_large,
                       CONTENT_LENGTH=str(len(too_large)))
    resp = req.get_response(app)
    assert resp.status_int == 413
    assert _error(json.loads(resp.body)) | {"request_id": None} == {
        "status": 413, "code": "cs2os.RequestEntityTooLarge",
        "title": "Request Entity Too Large", "request_id": None,
        "detail": "the request body is larger than 114688 bytes"}
    # Not announced (chunked): found out while it is read.
    req = _raw_request("/v1/migrations", too_large,
                       **{"wsgi.input_terminated": True})
    resp = req.get_response(app)
    assert resp.status_int == 413
    assert _error(json.loads(resp.body))["detail"] == \
        "the request body is larger than 114688 bytes"
    assert conductor.calls == []


def test_a_body_shorter_than_its_content_length_is_a_400(app, conductor):
    # The client went away mid-body: WebOb's DisconnectionError was a 500.
    req = _raw_request("/v1/migrations", b"{}", CONTENT_LENGTH="10")
    resp = req.get_response(app)
    assert resp.status_int == 400
    assert _error(json.loads(resp.body))["detail"].startswith(
        "the request body ended early: The client disconnected")
    assert conductor.calls == []


# -- policy before parsing ----------------------------------------------------


class ReadRecorder(io.BytesIO):
    """A request body that remembers whether anyone read it."""

    touched = False

    def read(self, *args):
        self.touched = True
        return super().read(*args)

    readline = read


MEMBER = {"X-Identity-Status": "Confirmed", "X-User-Id": "u",
          "X-Project-Id": "p", "X-Roles": "member,reader"}


def _as_member(config, conductor, method, path, body, headers=()):
    app = api_app.ContextMiddleware(api_app.Router(conductor, config))
    req = webob.Request.blank(path, method=method,
                              base_url="http://api.test:9877")
    recorder = ReadRecorder(body)
    req.environ.update(CONTENT_TYPE="application/json",
                       CONTENT_LENGTH=str(len(body)),
                       **{"wsgi.input": recorder})
    for name, value in dict(MEMBER, **dict(headers)).items():
        req.headers[name] = value
    resp = req.get_response(app)
    return resp, json.loads(resp.body), recorder


@pytest.mark.parametrize("method,path,headers,rule", [
    ("POST", "/v1/migrations", {}, "cs2os:migration:create"),
    ("POST", "/v1/migrations", {"Idempotency-Key": "\x7f"},
     "cs2os:migration:create"),
    ("POST", "/v1/migrations/%s/action" % MID, {},
     "any of cs2os:migration:cancel, cs2os:migration:cutover, "
     "cs2os:migration:retry"),
    ("GET", "/v1/migrations?host=%C3", {}, "cs2os:migration:list"),
    ("GET", "/v1/migrations/not-a-uuid", {}, "cs2os:migration:get"),
])
def test_an_unauthorized_caller_is_refused_before_its_request_is_read(
        config, conductor, method, path, headers, rule):
    # A body, header or query that would be a 400 (or cost a parse of a
    # 100 kB nesting) is a 403, and the body is not even read.
    resp, data, body = _as_member(config, conductor, method, path, DEEP,
                                  headers)
    assert resp.status_int == 403
    assert _error(data)["detail"] == \
        "Policy does not allow %s to be performed" % rule
    assert not body.touched
    assert conductor.calls == []


def test_a_policy_opening_one_action_still_checks_the_one_asked(
        config, conductor, tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"cs2os:migration:cancel": "role:member"\n')
    config.set_override("policy_file", str(policy_file),
                        group="oslo_policy")
    policy.reset()
    policy.init(config)
    path = "/v1/migrations/%s/action" % MID
    resp, _, _ = _as_member(config, conductor, "POST", path, b'{"cancel": {}}')
    assert resp.status_int == 202
    resp, data, body = _as_member(config, conductor, "POST", path,
                                  b'{"retry": {}}')
    # May use the endpoint (cancel), so the body is read: it asks for
    # retry, which this caller may not do.
    assert body.touched
    assert resp.status_int == 403
    assert _error(data)["detail"] == \
        "Policy does not allow cs2os:migration:retry to be performed"
    assert [c[0] for c in conductor.calls] == ["cancel_migration"]


# -- Idempotency-Key ----------------------------------------------------------


@pytest.mark.parametrize("key", ["5b0c1f9e-retry-1", "a b", "~" * 255, "x"])
def test_the_idempotency_key_goes_to_the_conductor(app, conductor, key):
    resp, _ = _call(app, "POST", "/v1/migrations",
                    {"migration": {"source": "web-1"}},
                    headers={"Idempotency-Key": key})
    assert resp.status_int == 202
    ((name, _, kwargs),) = conductor.calls
    assert (name, kwargs) == ("create_migration", {"arg": {
        "source": "web-1", "idempotency_key": key}})


@pytest.mark.parametrize("key,detail", [
    ("", "'' should be non-empty"),
    ("k" * 256, "is too long"),
    ("caf\xe9", "'café' must be 1-255 printable ASCII characters, not "
     "starting or ending with a space"),
    ("a\x7f", "must be 1-255 printable ASCII"),
    (" a", "must be 1-255 printable ASCII"),
    ("a\t", "must be 1-255 printable ASCII"),
])
def test_a_bad_idempotency_key_is_a_400_naming_the_header(app, conductor,
                                                          key, detail):
    resp, data = _call(app, "POST", "/v1/migrations",
                       {"migration": {"source": "web-1"}},
                       headers={"Idempotency-Key": key})
    assert resp.status_int == 400
    assert _error(data)["detail"].startswith("header Idempotency-Key: ")
    assert detail in _error(data)["detail"]
    assert conductor.calls == []


def test_the_conductors_409_and_422_reach_the_caller(app, conductor):
    conductor.raises = exception.MigrationConflict(
        vm="web-1", active=MID, state="running")
    resp, data = _call(app, "POST", "/v1/migrations",
                       {"migration": {"source": "web-1"}})
    assert resp.status_int == 409
    assert _error(data)["code"] == "cs2os.MigrationConflict"
    assert MID in _error(data)["detail"]
    conductor.raises = exception.IdempotencyKeyReused(
        key="k", migration_id=MID, detail="mode differ")
    resp, data = _call(app, "POST", "/v1/migrations",
                       {"migration": {"source": "web-1"}},
                       headers={"Idempotency-Key": "k"})
    assert resp.status_int == 422
    assert _error(data)["code"] == "cs2os.IdempotencyKeyReused"


# -- the OpenAPI document -----------------------------------------------------


def test_the_openapi_document_is_valid_openapi_3_0():
    doc = openapi.document("http://api.test:9877")
    assert doc["openapi"].startswith("3.0.")
    openapi_spec_validator.validate(doc)


def test_the_openapi_document_answers_without_a_token(config, conductor):
    for group, opts in ksm_opts.list_auth_token_opts():
        config.register_opts(opts, group=group)
    config.set_override("www_authenticate_uri", "http://127.0.0.1:5000",
                        group="keystone_authtoken")
    app = api_app.build(config, conductor)
    resp, data = _call(app, "GET", "/v1/openapi.json")
    assert resp.status_int == 200
    assert data == openapi.document("http://api.test:9877")
    assert data["servers"] == [{"url": "http://api.test:9877"}]
    # Only that exact path is public.
    resp, _ = _call(app, "GET", "/v1/openapi.json/")
    assert resp.status_int == 401
    assert conductor.calls == []


def test_the_document_publishes_the_schemas_the_api_validates_with():
    paths = openapi.document()["paths"]
    create = paths["/v1/migrations"]["post"]
    assert create["requestBody"]["content"]["application/json"][
        "schema"] == openapi.to_openapi(schemas.CREATE_MIGRATION)
    ((header,),) = [create["parameters"]]
    assert (header["name"], header["in"], header["schema"]) == (
        "Idempotency-Key", "header",
        openapi.to_openapi(schemas.IDEMPOTENCY_KEY))
    assert {p["name"]: p["schema"] for p in
            paths["/v1/migrations"]["get"]["parameters"]} == {
        name: openapi.to_openapi(s)
        for name, s in schemas.LIST_QUERY.items()}
    action = paths["/v1/migrations/{migration_id}/action"]["post"]
    assert action["requestBody"]["content"]["application/json"][
        "schema"] == openapi.to_openapi(schemas.MIGRATION_ACTION)
    # The errors it names are the conductor's, with their statuses.
    for status, name in (("409", "MigrationConflict"),
                         ("422", "IdempotencyKeyReused")):
        assert "cs2os.%s" % name in create["responses"][status][
            "description"]
        assert getattr(exception, name).code == int(status)


def test_every_documented_operation_is_routed(app):
    for path, item in openapi.document()["paths"].items():
        for method in item:
            resp, data = _call(app, method.upper(),
                               path.replace("{migration_id}", MID),
                               {} if method == "post" else None)
            assert resp.status_int in (200, 400), (method, path, data)


@pytest.mark.parametrize("schema,converted", [
    ({"anyOf": [{"type": "string"}, {"type": "null"}]},
     {"type": "string", "nullable": True}),
    ({"type": "object", "propertyNames": {"minLength": 1}},
     {"type": "object", "x-propertyNames": {"minLength": 1}}),
    ({"properties": {"a": {"anyOf": [{"type": "integer"},
                                      {"type": "null"}]}}},
     {"properties": {"a": {"type": "integer", "nullable": True}}}),
])
def test_json_schema_becomes_openapi_3_0(schema, converted):
    assert openapi.to_openapi(schema) == converted


def test_a_keyword_openapi_3_0_lacks_is_refused():
    with pytest.raises(ValueError, match="OpenAPI 3.0 has no const"):
        openapi.to_openapi({"properties": {"a": {"const": 1}}})
