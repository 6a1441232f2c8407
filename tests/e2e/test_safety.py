"""The safety promise against the real parts (operator guide, "Safety").

Ways the promise was broken before, reproduced as an operator would on a
real Nova and real KVM domains, each now ending safe: a CloudStack job
failing after the commit leaves a warning, never a second running copy;
the same VM asked for twice is refused; a client retry with the same
idempotency key gets the same migration; a VM started again in
CloudStack while it is moved stops the migration before the commit.
Crash points and two conductors: tests/faults.
"""

import os

import pytest

from cs2os_agent.common import exception
from tests.e2e.conftest import new_vm
from tools.testbed import images
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_state
from tools.testbed.harness import wait_step

FINAL = ("succeeded", "failed", "cancelled")


def test_a_destroy_job_failing_after_the_commit_leaves_one_copy(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    # Before: the rollback started the CloudStack VM again next to the
    # Nova server running its disk (two copies, one MAC and IP).
    vm = new_vm(cloud, cloudstack_root)
    cloud.fail_jobs[("destroyVirtualMachine", vm.id)] = "KVM agent says no"
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host,
        "delete_source": True})
    done = wait_state(conductor_api, ctxt, created["id"], FINAL)
    assert (done["state"], done["step"]) == ("succeeded", "done"), \
        (done["error"], done["events"])
    assert done["committed"] is True
    (warning,) = done["result"]["warnings"]
    assert warning["step"] == "retire_source"
    assert "KVM agent says no" in warning["message"]
    assert "rolled_back" not in done["result"]
    server = minicloud.conn.compute.get_server(
        done["resources"]["server_id"])
    assert server.status == "ACTIVE"
    wait_console(os.path.join(minicloud.instances_path, server.id,
                              "console.log"), vm.volume.message)
    # One copy: the CloudStack VM stayed stopped (its destroy failed).
    assert cloud.vm_state(vm) == "Stopped"
    assert not cloud.kvm.is_running(vm.instancename)
    # Nothing to retry: it succeeded.
    with pytest.raises(exception.MigrationStateConflict):
        conductor_api.retry_migration(ctxt, created["id"])


def test_the_same_vm_by_name_then_by_id_is_refused(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    first = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host})
    with pytest.raises(exception.MigrationConflict) as caught:
        conductor_api.create_migration(ctxt, {
            "source": vm.id, "host": minicloud.compute_host})
    assert first["id"] in str(caught.value)
    ours = conductor_api.list_migrations(ctxt, {"source": vm.id})
    assert [m["id"] for m in ours] == [first["id"]]
    done = wait_state(conductor_api, ctxt, first["id"], FINAL)
    assert done["state"] == "succeeded", (done["error"], done["events"])


def test_a_client_retry_with_the_same_key_gets_the_same_migration(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    request = {"source": vm.name, "host": minicloud.compute_host,
               "idempotency_key": "import-%s" % vm.id}
    first = conductor_api.create_migration(ctxt, dict(request))
    again = conductor_api.create_migration(ctxt, dict(request))
    assert again["id"] == first["id"]
    with pytest.raises(exception.IdempotencyKeyReused):
        conductor_api.create_migration(ctxt, dict(request, mode="warm"))
    done = wait_state(conductor_api, ctxt, first["id"], FINAL)
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert len(conductor_api.list_migrations(ctxt, {"source": vm.id})) == 1


def test_a_vm_started_again_in_cloudstack_stops_the_migration_first(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    # Before: the migration succeeded and both the Nova server and the
    # CloudStack VM ran the guest.
    # 96 MiB to copy at the agent's 20 MB/s: the start happens mid-copy.
    vm = new_vm(cloud, cloudstack_root, template_size=128 * images.MiB,
                writes=((0x3C, images.MiB, 96 * images.MiB),))
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host})
    wait_step(conductor_api, ctxt, created["id"], "sync")
    cloud.user_start(vm)  # as a user would, from CloudStack's UI
    done = wait_state(conductor_api, ctxt, created["id"], FINAL)
    assert (done["state"], done["step"]) == ("failed", "start"), \
        (done["error"], done["events"])
    assert "was started again" in done["error"]
    assert done["committed"] is False
    # The user's VM runs on, its guest boots its own disk; nothing of the
    # migration is left in Nova, and the rollback started nothing.
    assert cloud.vm_state(vm) == "Running"
    wait_console(cloud.kvm.console(vm.instancename), vm.volume.message)
    assert not [s for s in minicloud.conn.compute.servers(
        all_projects=True) if (s.metadata or {}).get(
            "cs2os_migration_id") == created["id"]]
    assert not any(m.startswith("started CloudStack VM")
                   for m in done["result"]["rolled_back"])
