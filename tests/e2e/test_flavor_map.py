"""[cloudstack] flavor_map: a CloudStack service offering becomes the
flavor the operator chose, not the smallest that fits; a request's own
flavor still wins, and a mapping to a flavor Nova does not have fails
validate naming the option, having created nothing."""


import pytest

from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import module_conductor
from tests.e2e.conftest import new_vm
from tools.testbed.harness import wait_state


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root):
    """This module's conductor, with a flavor_map: the stand-in's offering
    (64 MiB, which the smallest fit makes m1.tiny) -> m1.small, and a
    second offering -> a flavor that does not exist."""
    cloud.unmapped = cloud.add_service_offering(
        "ghost-%s" % RUN_ID, cpunumber=1, memory=64)
    proc = module_conductor(
        request, workdir, services, cloud, minicloud, conductor_api,
        cloudstack_root, flavor_map="%s:m1.small,%s:no-such-%s" % (
            cloud.offering.name, cloud.unmapped.id, RUN_ID))
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def _server_flavor(minicloud, done):
    server = minicloud.conn.compute.get_server(
        done["resources"]["server_id"])
    return server.flavor["original_name"]


def test_the_offering_becomes_the_mapped_flavor(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert done["resources"]["flavor_name"] == "m1.small"
    assert _server_flavor(minicloud, done) == "m1.small"
    assert done["result"]["flavor_chosen_by"] == (
        "[cloudstack] flavor_map (service offering %s)" % cloud.offering.name)


def test_a_requested_flavor_wins_over_the_map(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host,
               "flavor": "m1.tiny"})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert _server_flavor(minicloud, done) == "m1.tiny"
    assert done["result"]["flavor_chosen_by"] == "request"


def test_a_mapping_to_a_missing_flavor_fails_validate(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    vm.offering = cloud.unmapped  # the stand-in lists it from now on
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert (done["state"], done["step"]) == ("failed", "validate")
    assert "flavor no-such-%s not found, named by the [cloudstack] " \
        "flavor_map (service offering %s)" % (RUN_ID, cloud.unmapped.id) \
        in done["error"]
    assert not done["resources"].get("server_id")
    assert cloud.vm_state(vm) == "Running"
