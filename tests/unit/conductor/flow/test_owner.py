"""Whose VM it is: project_map keys, the request's project, the refusals.

The real thing (Keystone projects, a server in the customer's project that
the customer lists) is tests/e2e/test_ownership.py.
"""

import types

import pytest
from oslo_config import cfg
from oslo_config import fixture as config_fixture

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import owner
from cs2os_agent.conf import cloudstack as cloudstack_conf

ACCOUNT_VM = {"name": "web-1", "account": "webshop", "domain": "globex",
              "domainpath": "ROOT/customers/globex"}
PROJECT_VM = {"name": "db-1", "projectid": "p-42", "project": "erp",
              "domain": "ROOT", "domainpath": "ROOT"}


class Keystone:
    def __init__(self, *names):
        self.projects = {n: types.SimpleNamespace(id="id-" + n, name=n)
                         for n in names}

    def find_project(self, ref):
        for project in self.projects.values():
            if ref in (project.id, project.name):
                return project
        raise exception.Invalid(
            reason="Keystone has no project with id or name %s" % ref)

    def own_identity(self):
        return "id-service", "cs2os-user"


class Ctx:
    def __init__(self, conf, options=None, keystone=None, recorded=None,
                 resources=None):
        self.conf = conf
        self.clients = types.SimpleNamespace(
            openstack=keystone or Keystone("acme", "globex", "erp"))
        self.migration = {"options": options or {}, "result": {},
                          "target_project_id": recorded}
        self.resources = resources or {}
        self.saved = {}

    def save(self, **values):
        self.saved.update(values)
        self.migration.update(values)

    def result(self, **values):
        self.migration["result"].update(values)


@pytest.fixture
def conf():
    fixture = config_fixture.Config(cfg.ConfigOpts())
    fixture.setUp()
    fixture.register_opts(cloudstack_conf.cloudstack_opts, "cloudstack")
    yield fixture
    fixture.cleanUp()


def test_keys_name_a_project_or_an_account_of_a_domain():
    assert owner.map_keys(PROJECT_VM) == ["p-42", "erp"]
    assert owner.map_keys(ACCOUNT_VM) == ["ROOT/customers/globex/webshop",
                                          "globex/webshop"]
    # CloudStack before 4.19 has no domainpath: the domain name serves.
    assert owner.map_keys({"account": "admin", "domain": "ROOT"}) == \
        ["ROOT/admin"]


@pytest.mark.parametrize("mapping,expected,chosen", [
    ({"ROOT/customers/globex/webshop": "globex", "*": "acme"}, "id-globex",
     "[cloudstack] project_map (ROOT/customers/globex/webshop)"),
    ({"globex/webshop": "id-globex"}, "id-globex",
     "[cloudstack] project_map (globex/webshop)"),
    ({"*": "acme"}, "id-acme", "[cloudstack] project_map (*)"),
])
def test_account_vm_is_mapped_by_path_then_name_then_catch_all(
        conf, mapping, expected, chosen):
    conf.config(group="cloudstack", project_map=mapping)
    ctx = Ctx(conf.conf)
    project, chosen_by = owner.target_project(ctx, ACCOUNT_VM)
    assert (project.id, chosen_by) == (expected, chosen)


def test_project_vm_is_mapped_by_id_before_name(conf):
    conf.config(group="cloudstack",
                project_map={"erp": "acme", "p-42": "erp"})
    project, _ = owner.target_project(Ctx(conf.conf), PROJECT_VM)
    assert project.id == "id-erp"


def test_the_request_wins_over_the_map(conf):
    conf.config(group="cloudstack", project_map={"*": "acme"})
    project, chosen_by = owner.target_project(
        Ctx(conf.conf, options={"project": "globex"}), ACCOUNT_VM)
    assert (project.id, chosen_by) == ("id-globex", "request")


def test_an_unmapped_owner_is_refused_naming_it_and_the_option(conf):
    conf.config(group="cloudstack", project_map={"other/x": "acme"})
    with pytest.raises(exception.Invalid) as info:
        owner.target_project(Ctx(conf.conf), ACCOUNT_VM)
    message = str(info.value)
    assert "CloudStack account webshop of domain ROOT/customers/globex" \
        in message
    assert "[cloudstack] project_map has no entry" in message
    assert "ROOT/customers/globex/webshop, globex/webshop" in message


def test_a_mapping_to_a_missing_project_names_the_mapping(conf):
    conf.config(group="cloudstack", project_map={"erp": "gone"})
    with pytest.raises(exception.Invalid) as info:
        owner.target_project(Ctx(conf.conf), PROJECT_VM)
    assert str(info.value).endswith(
        "Keystone has no project with id or name gone, named by the "
        "[cloudstack] project_map (erp)")


def test_record_keeps_the_project_while_an_attempt_left_things_there():
    erp = types.SimpleNamespace(id="id-erp", name="erp")
    ctx = Ctx(None, recorded="id-acme", resources={"ports": [{"id": "p"}]})
    with pytest.raises(exception.Invalid) as info:
        owner.record(ctx, erp, "request")
    assert "changed from id-acme to id-erp" in str(info.value)
    assert ctx.saved == {}
    # Nothing left behind: the new project is recorded.
    ctx = Ctx(None, recorded="id-acme", resources={"ports": []})
    owner.record(ctx, erp, "request")
    assert ctx.saved == {"target_project_id": "id-erp"}
    assert ctx.migration["result"]["project"] == {
        "id": "id-erp", "name": "erp", "chosen_by": "request"}


def test_no_role_in_the_project_is_refused_with_the_command():
    class Unscoped:
        def own_identity(self):
            raise exception.OpenStackError(operation="x",
                                           reason="401 Unauthorized")

    ctx = Ctx(None)
    ctx.clients.in_project = lambda project_id: (Unscoped(), None)
    erp = types.SimpleNamespace(id="id-erp", name="erp")
    with pytest.raises(exception.Invalid) as info:
        owner.check_access(ctx, erp)
    assert "openstack role add --user cs2os-user --project id-erp admin" \
        in str(info.value)
