"""A request's own project_map and flavor_map (API 1.14, RPC 1.9): looked
up before the [cloudstack] options of the same names, on the real
minicloud.  The conductor's flavor_map maps the stand-in's offering to
m1.tiny (what the smallest fit would pick too) and its project_map sends
every owner to the minicloud's admin project; the request's maps say
m1.small and a project of this module's: the server is built with
m1.small in that project, and the result says the request's maps chose.
"""

import pytest

from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import module_conductor
from tests.e2e.conftest import new_vm
from tests.e2e.conftest import target_project
from tools.testbed.harness import wait_for
from tools.testbed.harness import wait_state
from tools.testbed.minicloud import admin_auth


@pytest.fixture(scope="module")
def wave_project(minicloud):
    with target_project(minicloud, "cs2os-e2e-%s-wave" % RUN_ID) as project:
        yield project


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root, wave_project):
    """This module's conductor: its own flavor_map (the offering ->
    m1.tiny) and the usual project_map ('*' -> the admin project)."""
    proc = module_conductor(
        request, workdir, services, cloud, minicloud, conductor_api,
        cloudstack_root, flavor_map="%s:m1.tiny" % cloud.offering.name)
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def _maps(cloud, wave_project):
    owner = "ROOT/%s" % cloud.admin.name
    return owner, {"flavor_map": {cloud.offering.name: "m1.small",
                                  "no-such-offering": "m1.large"},
                   "project_map": {owner: wave_project.name}}


def test_the_request_maps_choose_flavor_and_project(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        wave_project):
    owner, maps = _maps(cloud, wave_project)
    vm = new_vm(cloud, cloudstack_root)
    created = conductor_api.create_migration(
        ctxt, dict({"source": vm.name, "host": minicloud.compute_host},
                   **maps))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    server = minicloud.conn.compute.get_server(
        done["resources"]["server_id"])
    assert server.flavor["original_name"] == "m1.small"
    assert server.project_id == wave_project.id
    assert done["target_project_id"] == wave_project.id
    assert done["result"]["flavor_chosen_by"] == (
        "request flavor_map (service offering %s)" % cloud.offering.name)
    assert done["result"]["project"] == {
        "id": wave_project.id, "name": wave_project.name,
        "chosen_by": "request project_map (%s)" % owner}


def test_a_key_the_request_map_lacks_falls_through_to_the_config(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        wave_project):
    """A dry run (nothing created): the request's maps name other keys
    only, so [cloudstack] flavor_map and project_map choose."""
    vm = new_vm(cloud, cloudstack_root)
    answer = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host, "dry_run": True,
        "flavor_map": {"no-such-offering": "m1.small"},
        "project_map": {"ROOT/no-such-account": wave_project.name}})
    plan = answer["preflight"]["plan"]
    assert plan["flavor"]["name"] == "m1.tiny"
    assert plan["flavor"]["chosen_by"] == (
        "[cloudstack] flavor_map (service offering %s)" % cloud.offering.name)
    assert plan["project"]["name"] == admin_auth(minicloud)["project_name"]
    assert plan["project"]["chosen_by"] == "[cloudstack] project_map (*)"


def test_a_plans_maps_and_a_vms_override_merge_key_by_key(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        wave_project):
    """One-VM plan: the plan's defaults map the owner to the wave's
    project and the offering to a flavor Nova does not have; the VM's
    override maps the offering to m1.small.  The override's entry wins,
    the plan's project entry stays."""
    owner, maps = _maps(cloud, wave_project)
    vm = new_vm(cloud, cloudstack_root)
    plans_api = conductor_rpcapi.ConductorAPI(timeout=60)
    plan = conductor_api.create_plan(ctxt, {
        "name": "maps-%s" % RUN_ID,
        "defaults": {"host": minicloud.compute_host,
                     "project_map": maps["project_map"],
                     "flavor_map": {cloud.offering.name: "no-such-%s"
                                    % RUN_ID}},
        "vms": [{"vm": vm.name, "overrides": {
            "flavor_map": {cloud.offering.name: "m1.small"}}}]})
    started = plans_api.start_plan(ctxt, plan["id"])
    assert started["state"] == "running", started["vms"]
    seen = {}

    def ended():
        seen["plan"] = conductor_api.get_plan(ctxt, plan["id"])
        return seen["plan"]["state"] != "running"
    wait_for(ended, 300, "plan %s to end" % plan["id"], interval=1)
    row = seen["plan"]["vms"][0]
    assert (seen["plan"]["state"], row["state"]) == ("done", "succeeded"), \
        seen["plan"]["vms"]
    done = conductor_api.get_migration(ctxt, row["migration_id"])
    server = minicloud.conn.compute.get_server(
        done["resources"]["server_id"])
    assert server.flavor["original_name"] == "m1.small"
    assert server.project_id == wave_project.id
    assert done["result"]["flavor_chosen_by"] == (
        "request flavor_map (service offering %s)" % cloud.offering.name)
    assert done["result"]["project"]["chosen_by"] == (
        "request project_map (%s)" % owner)
