"""The application: routing, the auth pipeline, and how a conductor's
answer or silence becomes a status (api/app.py, api/errors.py)."""

import oslo_messaging as messaging
from keystonemiddleware import opts as ksm_opts

from cs2os_agent.api import app as api_app
from cs2os_agent.common import exception
from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error


def test_versions_answer_without_a_token(config, conductor):
    # keystone auth and no token at all: the root still answers.
    app = api_app.build(config, conductor)
    resp, data = call(app, "GET", "/")
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
    resp, _ = call(app, "GET", "/v1/migrations")
    assert resp.status_int == 401
    assert resp.headers["WWW-Authenticate"] == \
        'Keystone uri="http://127.0.0.1:5000"'
    assert conductor.calls == []


def test_unknown_paths_and_methods(app):
    resp, data = call(app, "GET", "/v2/migrations")
    assert resp.status_int == 404
    assert error(data)["detail"] == "no resource at /v2/migrations"
    resp, data = call(app, "DELETE", "/v1/migrations/" + MID)
    assert resp.status_int == 405
    assert resp.headers["Allow"] == "GET"


# -- the conductor's verdicts ------------------------------------------------


def test_conductor_verdicts_keep_their_status(app, conductor):
    conductor.raises = exception.Invalid(
        reason="source (the CloudStack VM id or name) is required")
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "a"}})
    assert resp.status_int == 400
    assert error(data)["detail"] == (
        "Invalid request: source (the CloudStack VM id or name) is "
        "required")
    assert error(data)["code"] == "cs2os.Invalid"


def test_state_conflict_is_409(app, conductor):
    conductor.raises = exception.MigrationStateConflict(
        migration_id=MID, state="succeeded", action="cancel")
    resp, data = call(app, "POST", "/v1/migrations/%s/action" % MID,
                      {"cancel": {}})
    assert resp.status_int == 409
    assert error(data)["detail"] == \
        "Migration %s is succeeded: cannot cancel" % MID


def test_the_conductors_409_and_422_reach_the_caller(app, conductor):
    conductor.raises = exception.MigrationConflict(
        vm="web-1", active=MID, state="running")
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-1"}})
    assert resp.status_int == 409
    assert error(data)["code"] == "cs2os.MigrationConflict"
    assert MID in error(data)["detail"]
    conductor.raises = exception.IdempotencyKeyReused(
        key="k", migration_id=MID, detail="mode differ")
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-1"}},
                      headers={"Idempotency-Key": "k"})
    assert resp.status_int == 422
    assert error(data)["code"] == "cs2os.IdempotencyKeyReused"


def test_a_silent_conductor_is_503(app, conductor):
    conductor.raises = messaging.MessagingTimeout("no reply")
    resp, data = call(app, "GET", "/v1/migrations")
    assert resp.status_int == 503
    assert "cs2os-conductor did not answer within 30 s" in \
        error(data)["detail"]


def test_unexpected_errors_are_500_without_internals(app, conductor):
    conductor.raises = KeyError("secret-internal-detail")
    resp, data = call(app, "GET", "/v1/migrations")
    assert resp.status_int == 500
    assert "secret-internal-detail" not in resp.text
    assert error(data)["code"] == "cs2os.InternalError"


def test_a_conductor_without_its_database_is_503_retry_later(app, conductor):
    conductor.raises = messaging.RemoteError(
        "DBConnectionError", "(psycopg2.OperationalError) connection "
        "to server at 127.0.0.1 refused")
    resp, data = call(app, "GET", "/v1/migrations")
    assert resp.status_int == 503
    assert resp.headers["Retry-After"] == "5"
    assert error(data)["code"] == "cs2os.DatabaseUnavailable"
    assert "DBConnectionError" in error(data)["detail"]
    # The driver's message (host names, maybe a DSN) stays in the log.
    assert "127.0.0.1" not in resp.text
