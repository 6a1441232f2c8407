"""The policy personas of current OpenStack services: an admin, a
project's readers and members, a caller without a role (api/policies.py,
api/policy.py, the handlers of api/migrations.py).

A migration's project, for its readers, is its target project: the
Keystone project its server lands in, not its creator's.
"""

import pytest

from cs2os_agent.api import app as api_app
from cs2os_agent.api import policies
from cs2os_agent.api import policy
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from tests.unit.api.harness import MID
from tests.unit.api.harness import call
from tests.unit.api.harness import error

# The roles of tokens as Keystone issues them: its bootstrap makes admin
# imply member and member imply reader, and a token carries the implied
# roles too.
ADMIN = ["admin", "member", "reader"]
MEMBER = ["member", "reader"]
READER = ["reader"]

GET = "cs2os:migration:get"
LIST = "cs2os:migration:list"
LIST_ALL = "cs2os:migration:list:all_projects"


def ctx(project, roles, **kwargs):
    return cs2os_context.RequestContext(user_id="u", project_id=project,
                                        roles=roles, **kwargs)


def test_the_defaults():
    rules = {r.name: r for r in policies.list_rules()}
    reader = "rule:admin_api or (role:reader and project_id:%(project_id)s)"
    assert {name: r.check_str for name, r in rules.items()} == {
        "admin_api": "role:admin",
        "cs2os:migration:create": "rule:admin_api",
        LIST: reader,
        LIST_ALL: "rule:admin_api",
        GET: reader,
        "cs2os:migration:cancel": "rule:admin_api",
        "cs2os:migration:retry": "rule:admin_api",
        "cs2os:migration:cutover": "rule:admin_api",
        "cs2os:migration:show:host_details": "rule:admin_api",
        # Plans: admin-only, every one.
        **{"cs2os:plan:%s" % name: "rule:admin_api" for name in (
            "create", "list", "get", "delete", "validate", "start",
            "cancel", "retry")},
    }
    assert all(r.scope_types == ["project"] for name, r in rules.items()
               if name != "admin_api")
    # Why a member passes role:reader is written down where operators
    # read (the sample policy file).
    assert "admin implies member implies reader" in rules[GET].description


# -- the decisions, on RequestContexts ----------------------------------------


@pytest.mark.parametrize("context, allowed", [
    (ctx("ops", ADMIN), True),
    # An admin token without the implied roles: admin_api is enough.
    (ctx("ops", ["admin"]), True),
    (ctx("A", MEMBER), True),
    (ctx("A", READER), True),
    (ctx("B", READER), False),
    (ctx("B", MEMBER), False),
    # member passes through Keystone's implied reader role only.
    (ctx("A", ["member"]), False),
    (ctx("A", []), False),
    (ctx("A", ["observer"]), False),
])
@pytest.mark.parametrize("rule", [GET, LIST])
def test_who_may_read_project_a(config, rule, context, allowed):
    assert policy.check(context, rule, {"project_id": "A"}) is allowed


@pytest.mark.parametrize("context, allowed", [
    (ctx("ops", ADMIN), True), (ctx("A", MEMBER), False),
    (ctx("A", READER), False), (ctx("A", []), False),
])
def test_only_admins_list_every_project(config, context, allowed):
    # Checked against the caller's own project.
    assert policy.check(context, LIST_ALL) is allowed


@pytest.mark.parametrize("rule", ["cs2os:migration:create",
                                  "cs2os:migration:cancel",
                                  "cs2os:migration:retry",
                                  "cs2os:migration:cutover"])
def test_writes_stay_admin_only(config, rule):
    assert policy.check(ctx("ops", ADMIN), rule)
    for roles in (MEMBER, READER, []):
        assert not policy.check(ctx("A", roles), rule, {"project_id": "A"})


def test_the_target_of_a_record_is_its_target_project(config):
    record = {"project_id": "ops", "target_project_id": "A"}
    assert policy.record_target(record) == {"project_id": "A"}
    assert policy.check(ctx("A", READER), GET, policy.record_target(record))
    # The creator's project is not the record's for its readers.
    assert not policy.check(ctx("ops", READER), GET,
                            policy.record_target(record))


def test_a_record_without_a_target_project_is_for_admins(config):
    target = policy.record_target({"target_project_id": None})
    assert target == {}
    assert policy.check(ctx("ops", ADMIN), GET, target)
    assert not policy.check(ctx("A", READER), GET, target)
    # Not "None" == str(None): a token without a project does not match
    # a record without one.
    assert not policy.check(ctx(None, READER), GET, target)
    assert not policy.check(ctx(None, READER), LIST)


@pytest.mark.parametrize("scope", [{"domain_id": "default"},
                                   {"system_scope": "all"}])
def test_a_token_of_another_scope_is_refused_not_an_error(config, scope):
    # oslo.policy raises its own InvalidScope: a 403 here, not a 500.
    context = ctx(None, ADMIN, **scope)
    with pytest.raises(exception.PolicyNotAuthorized):
        policy.authorize(context, LIST)
    assert not policy.check(context, LIST)


# -- the API, per persona -----------------------------------------------------


def as_(project, roles):
    return {"X-Identity-Status": "Confirmed", "X-User-Id": "u-%s" % project,
            "X-Project-Id": project, "X-Roles": ",".join(roles)}


@pytest.fixture
def keystone_app(config, conductor):
    """The API behind a (stand-in) auth_token that confirmed the token."""
    return api_app.ContextMiddleware(api_app.Router(conductor, config))


def listed(app, conductor, query, headers):
    resp, data = call(app, "GET", "/v1/migrations" + query, headers=headers)
    assert resp.status_int == 200, data
    ((name, context, kwargs),) = conductor.calls[-1:]
    assert name == "list_migrations"
    return kwargs["arg"], data


def test_an_admin_lists_every_project_and_may_filter(keystone_app, conductor):
    admin = as_("ops", ADMIN)
    assert listed(keystone_app, conductor, "", admin)[0] == {}
    filters, data = listed(keystone_app, conductor, "?project=A&limit=1",
                           admin)
    assert filters == {"target_project_id": "A"}
    # The next page's link carries the query parameter, not the column.
    assert data["migrations_links"][0]["href"].endswith(
        "?limit=1&marker=%s&project=A" % MID)


@pytest.mark.parametrize("roles", [MEMBER, READER])
def test_a_project_user_lists_its_projects_migrations(keystone_app,
                                                      conductor, roles):
    user = as_("A", roles)
    assert listed(keystone_app, conductor, "", user)[0] == {
        "target_project_id": "A"}
    assert listed(keystone_app, conductor, "?project=A", user)[0] == {
        "target_project_id": "A"}
    filters, data = listed(keystone_app, conductor, "?state=failed&limit=1",
                           user)
    assert filters == {"state": "failed", "target_project_id": "A"}
    assert data["migrations_links"][0]["href"].endswith(
        "?limit=1&marker=%s&state=failed" % MID)


def test_another_projects_list_is_a_403_naming_the_rule(keystone_app,
                                                        conductor):
    resp, data = call(keystone_app, "GET", "/v1/migrations?project=A",
                      headers=as_("B", READER))
    assert resp.status_int == 403
    assert error(data)["code"] == "cs2os.PolicyNotAuthorized"
    assert error(data)["detail"] == (
        "project A is not the token's project: listing another project's "
        "migrations needs cs2os:migration:list:all_projects")
    assert conductor.calls == []


@pytest.mark.parametrize("roles", [[], ["member"], ["observer"]])
def test_without_reader_there_is_nothing_to_see(keystone_app, conductor,
                                                roles):
    conductor.values = {"target_project_id": "A"}
    for path, rule in (("/v1/migrations", LIST),
                       ("/v1/migrations/" + MID, GET)):
        resp, data = call(keystone_app, "GET", path,
                          headers=as_("A", roles))
        assert resp.status_int == 403
        assert error(data)["detail"] == \
            "Policy does not allow %s to be performed" % rule
    assert conductor.calls == []


@pytest.mark.parametrize("project, roles, status", [
    ("ops", ADMIN, 200),
    ("A", MEMBER, 200),
    ("A", READER, 200),
    # Another project's migration is not found, as a missing one.
    ("B", READER, 404),
    ("B", MEMBER, 404),
])
def test_show_is_for_the_target_projects_readers(keystone_app, conductor,
                                                 project, roles, status):
    conductor.values = {"project_id": "ops", "target_project_id": "A"}
    resp, data = call(keystone_app, "GET", "/v1/migrations/" + MID,
                      headers=as_(project, roles))
    assert resp.status_int == status
    if status == 200:
        assert data["migration"]["target_project_id"] == "A"
        assert data["migration"]["project_id"] == "ops"
    else:
        assert error(data)["code"] == "cs2os.MigrationNotFound"
        assert error(data)["detail"] == "Migration %s not found" % MID


def test_a_project_sees_the_outcome_not_the_hosts_and_paths(keystone_app,
                                                            conductor):
    conductor.values = {
        "target_project_id": "A", "target_host": "cmp-1",
        "compute_host": "cmp-1",
        "resources": {"server_id": "s-1", "image_id": "i-1",
                      "ports": [{"index": 0, "id": "p-1"}],
                      "overlay_source": {"transport": "nfs",
                                         "server": "10.0.0.9",
                                         "export": "/primary"},
                      "kvm_host": "10.0.0.7"},
        "result": {"project": {"id": "A"}, "warnings": [],
                   "sync": {"staged_path": "/var/lib/nova/x"},
                   "template_sha512": "ab"}}
    path = "/v1/migrations/" + MID
    _, member = call(keystone_app, "GET", path, headers=as_("A", MEMBER))
    shown = member["migration"]
    assert "target_host" not in shown and "compute_host" not in shown
    assert shown["resources"] == {"server_id": "s-1", "image_id": "i-1",
                                  "ports": [{"index": 0, "id": "p-1"}]}
    assert shown["result"] == {"project": {"id": "A"}, "warnings": []}
    _, listed_ = call(keystone_app, "GET", "/v1/migrations",
                      headers=as_("A", MEMBER))
    assert "compute_host" not in listed_["migrations"][0]
    assert "10.0.0.9" not in str(listed_)
    # An admin sees all of it.
    _, admin = call(keystone_app, "GET", path, headers=as_("ops", ADMIN))
    assert admin["migration"]["compute_host"] == "cmp-1"
    assert admin["migration"]["resources"]["kvm_host"] == "10.0.0.7"
    assert admin["migration"]["result"]["sync"]["staged_path"]


def test_a_migration_not_resolved_yet_is_for_admins(keystone_app, conductor):
    conductor.values = {"project_id": "A", "target_project_id": None}
    path = "/v1/migrations/" + MID
    resp, _ = call(keystone_app, "GET", path, headers=as_("ops", ADMIN))
    assert resp.status_int == 200
    # Not even for the creator's project's readers.
    resp, _ = call(keystone_app, "GET", path, headers=as_("A", MEMBER))
    assert resp.status_int == 404


@pytest.mark.parametrize("roles", [MEMBER, READER])
def test_project_users_may_not_start_or_steer(keystone_app, conductor, roles):
    conductor.values = {"target_project_id": "A"}
    resp, data = call(keystone_app, "POST", "/v1/migrations",
                      {"migration": {"source": "web-1", "project": "A"}},
                      headers=as_("A", roles))
    assert resp.status_int == 403
    for action in ("cancel", "retry", "cutover"):
        resp, data = call(keystone_app, "POST",
                          "/v1/migrations/%s/action" % MID, {action: {}},
                          headers=as_("A", roles))
        assert resp.status_int == 403
    assert conductor.calls == []


# -- through a real conductor manager and database ----------------------------


def test_each_persona_lists_what_it_may_see(config, manager_app):
    _, mgr = manager_app
    app = api_app.ContextMiddleware(api_app.Router(mgr, config))
    for n, target in enumerate(["A", "B", None, "A"]):
        mgr.db.create_migration({
            "id": "00000000-0000-4000-8000-00000000000%d" % n,
            "source_ref": "vm-%d" % n, "state": "queued",
            "step": "validate", "options": {}, "source": {},
            "resources": {}, "result": {}, "project_id": "ops",
            "target_project_id": target})

    def ids(headers, query=""):
        resp, data = call(app, "GET", "/v1/migrations" + query,
                          headers=headers)
        assert resp.status_int == 200, data
        return sorted(m["id"][-1] for m in data["migrations"])

    assert ids(as_("ops", ADMIN)) == ["0", "1", "2", "3"]
    assert ids(as_("ops", ADMIN), "?project=B") == ["1"]
    assert ids(as_("A", MEMBER)) == ["0", "3"]
    assert ids(as_("B", READER)) == ["1"]
    assert ids(as_("C", READER)) == []
    resp, _ = call(app, "GET", "/v1/migrations", headers=as_("A", []))
    assert resp.status_int == 403
