"""Policy: who may do what, and that it speaks before anything the
caller sent is read (api/policy.py, api/policies.py)."""

import io
import json

import pytest
import webob

from cs2os_agent.api import app as api_app
from cs2os_agent.api import policy
from tests.unit.api.harness import DEEP
from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error


def test_policy_refuses_non_admins(config, conductor):
    # The context middleware behind a (stand-in) auth_token that
    # confirmed a member-only token.
    app = api_app.ContextMiddleware(api_app.Router(conductor, config))
    resp, data = call(app, "POST", "/v1/migrations",
                      {"migration": {"source": "a"}},
                      headers={"X-Identity-Status": "Confirmed",
                               "X-User-Id": "u", "X-Project-Id": "p",
                               "X-Roles": "member,reader"})
    assert resp.status_int == 403
    assert error(data)["detail"] == \
        "Policy does not allow cs2os:migration:create to be performed"
    assert conductor.calls == []


def test_policy_file_can_open_every_project_to_readers(config, conductor,
                                                       tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        '"cs2os:migration:list:all_projects": "role:reader"\n')
    config.set_override("policy_file", str(policy_file),
                        group="oslo_policy")
    policy.reset()
    policy.init(config)
    app = api_app.ContextMiddleware(api_app.Router(conductor, config))
    headers = {"X-Identity-Status": "Confirmed", "X-User-Id": "u",
               "X-Project-Id": "p", "X-Roles": "reader"}
    resp, _ = call(app, "GET", "/v1/migrations?project=other",
                   headers=headers)
    assert resp.status_int == 200
    # Every project's, filtered as asked, not narrowed to the token's.
    assert conductor.calls[-1][2]["arg"] == {"target_project_id": "other"}
    # get is still the default: another project's migration is not found.
    conductor.values = {"target_project_id": "other"}
    resp, _ = call(app, "GET", "/v1/migrations/" + MID, headers=headers)
    assert resp.status_int == 404


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
    # A reader may list and show: a token without it may not.
    ("GET", "/v1/migrations?host=%C3", {"X-Roles": "observer"},
     "cs2os:migration:list"),
    ("GET", "/v1/migrations/not-a-uuid", {"X-Roles": ""},
     "cs2os:migration:get"),
])
def test_an_unauthorized_caller_is_refused_before_its_request_is_read(
        config, conductor, method, path, headers, rule):
    # A body, header or query that would be a 400 (or cost a parse of a
    # 100 kB nesting) is a 403, and the body is not even read.
    resp, data, body = _as_member(config, conductor, method, path, DEEP,
                                  headers)
    assert resp.status_int == 403
    assert error(data)["detail"] == \
        "Policy does not allow %s to be performed" % rule
    assert not body.touched
    assert conductor.calls == []


def test_a_policy_opening_one_action_still_checks_the_one_asked(
        config, conductor, tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"cs2os:migration:cancel": '
                           '"role:member and project_id:%(project_id)s"\n')
    config.set_override("policy_file", str(policy_file),
                        group="oslo_policy")
    policy.reset()
    policy.init(config)
    path = "/v1/migrations/%s/action" % MID
    conductor.values = {"target_project_id": "p"}
    resp, _, _ = _as_member(config, conductor, "POST", path, b'{"cancel": {}}')
    assert resp.status_int == 202
    resp, data, body = _as_member(config, conductor, "POST", path,
                                  b'{"retry": {}}')
    # May use the endpoint (cancel), so the body is read: it asks for
    # retry, which this caller may not do.
    assert body.touched
    assert resp.status_int == 403
    assert error(data)["detail"] == \
        "Policy does not allow cs2os:migration:retry to be performed"
    assert [c[0] for c in conductor.calls] == ["get_migration",
                                               "cancel_migration"]
    # The rule is checked against the migration's target project too: a
    # member of p may not cancel another project's migration, nor learn
    # that it exists.
    conductor.values = {"target_project_id": "q"}
    resp, data, _ = _as_member(config, conductor, "POST", path,
                               b'{"cancel": {}}')
    assert resp.status_int == 404
    assert error(data)["code"] == "cs2os.MigrationNotFound"
    assert [c[0] for c in conductor.calls][2:] == ["get_migration"]
