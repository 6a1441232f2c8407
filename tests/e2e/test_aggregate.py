"""A migration placed on a Nova host aggregate: the request names the
aggregate (made through the real Nova API, holding the minicloud's compute
host), not the host; the conductor checks the aggregate's hosts, picks one
at admission with its compute slot ([conductor] max_per_compute_host = 1)
and the server runs there."""

import time

import pytest

from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import module_conductor
from tests.e2e.conftest import new_vm
from tools.testbed.harness import RUN_ID
from tools.testbed.harness import wait_state


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root):
    proc = module_conductor(request, workdir, services, cloud, minicloud,
                            conductor_api, cloudstack_root,
                            conductor={"max_per_compute_host": 1})
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def _patient():
    """A preflight reads both clouds: more than the default call's wait."""
    return conductor_rpcapi.ConductorAPI(timeout=120)


@pytest.fixture
def aggregate(minicloud):
    """A Nova host aggregate holding the minicloud's compute host, deleted
    afterwards (its host removed first, as Nova requires)."""
    conn = minicloud.conn
    made = conn.compute.create_aggregate(name="e2e-%s-wave" % RUN_ID)
    conn.compute.add_host_to_aggregate(made, minicloud.compute_host)
    yield made
    conn.compute.remove_host_from_aggregate(made, minicloud.compute_host)
    conn.compute.delete_aggregate(made)
    assert conn.compute.find_aggregate(made.name) is None


def test_a_migration_goes_to_a_host_of_the_aggregate(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        aggregate):
    vm = new_vm(cloud, cloudstack_root)
    began = time.monotonic()
    preflight = _patient().create_migration(
        ctxt, {"source": vm.name, "aggregate": aggregate.name,
               "dry_run": True})["preflight"]
    print("preflight took %.1f s" % (time.monotonic() - began))
    assert preflight["ok"], preflight["findings"]
    assert preflight["plan"]["host"] == (
        "chosen at admission among the 1 usable hosts of host aggregate "
        "%s: %s" % (aggregate.name, minicloud.compute_host))
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "aggregate": aggregate.name})
    assert created["target_host"] is None
    assert created["options"]["aggregate"] == aggregate.name
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert done["target_host"] == minicloud.compute_host
    assert "placed on host %s of host aggregate %s" % (
        minicloud.compute_host, aggregate.name) in [
        e["message"] for e in done["events"]]
    server = minicloud.conn.compute.get_server(
        done["resources"]["server_id"])
    assert server.status == "ACTIVE"
    assert server.compute_host == minicloud.compute_host


def test_an_aggregate_without_hosts_fails_validation(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    conn = minicloud.conn
    empty = conn.compute.create_aggregate(name="e2e-%s-empty" % RUN_ID)
    try:
        vm = new_vm(cloud, cloudstack_root)
        preflight = _patient().create_migration(
            ctxt, {"source": vm.name, "aggregate": empty.name,
                   "dry_run": True})["preflight"]
        assert not preflight["ok"]
        assert {"check": "host", "severity": "critical",
                "message": "Nova host aggregate %s has no hosts"
                % empty.name} in preflight["findings"]
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "aggregate": str(empty.id)})
        done = wait_state(conductor_api, ctxt, created["id"],
                          ("succeeded", "failed"))
        assert done["state"] == "failed"
        assert "Nova host aggregate %s has no hosts" % empty.name in \
            done["error"]
        assert done["resources"].get("server_id") is None
    finally:
        conn.compute.delete_aggregate(empty)
