"""A CloudStack VM becomes a Nova server: the whole product, for real.

Real Keystone + Glance + Placement + Nova (libvirt/KVM) from the minicloud;
a CloudStack API stand-in whose VM is a running transient KVM domain on
CloudStack's NFS layout; RabbitMQ; cs2os-conductor and cs2os-agent as their
own processes.  The guest prints its disk's sector 1 on the serial console,
so after the migration Nova's own console log says which disk the server
booted from.
"""

import contextlib
import hashlib
import json
import os
import subprocess
import time

from cs2os_agent import qemu_img
from tests.e2e.conftest import new_vm
from tests.e2e.conftest import target_project
from tools.testbed import cloudstack_handlers
from tools.testbed import harness as ft
from tools.testbed import images
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_state
from tools.testbed.harness import wait_step
from tools.testbed.minicloud import STATE_DIR

MiB = images.MiB
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RUN_ID = ft.RUN_ID


def test_cold_migration_into_nova(conductor, conductor_api, ctxt, cloud,
                                  minicloud, cloudstack_root):  # noqa: F811
    vm = new_vm(cloud, cloudstack_root)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert [e["step"] for e in done["events"] if e["message"] == "done"] \
        == ["validate", "image", "ports", "boot", "volumes", "stop_source",
            "sync", "sync_volumes", "swap", "start", "cleanup",
            "retire_source"]
    resources, result = done["resources"], done["result"]
    assert resources["flavor_name"] == "m1.tiny"
    assert resources["host"] == minicloud.compute_host

    # Nova manages it: ACTIVE on the compute host, its disk is the
    # CloudStack VM's disk on Nova's cached base image.
    server = minicloud.conn.compute.get_server(resources["server_id"])
    assert server.status == "ACTIVE"
    assert server.compute_host == minicloud.compute_host
    disk = os.path.join(minicloud.instances_path, server.id, "disk")
    base = os.path.join(minicloud.instances_path, "_base", hashlib.sha1(
        resources["image_id"].encode()).hexdigest())
    info = qemu_img.info(disk, "qcow2", force_share=True)
    assert info["backing-filename"] == base
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)
    wait_console(os.path.join(minicloud.instances_path, server.id,
                              "console.log"), vm.volume.message)
    leftovers = [n for n in os.listdir(os.path.dirname(disk))
                 if n.startswith("disk.cs2os")]
    assert leftovers == []

    # Only the overlay moved to the compute node; the template went to
    # Glance once, and Glance holds exactly the bytes read at the source.
    assert result["sync"]["bytes_copied"] <= os.path.getsize(
        vm.volume.overlay)
    image = minicloud.conn.image.get_image(resources["image_id"])
    with open(vm.volume.template, "rb") as f:
        assert image.hash_value == hashlib.sha512(f.read()).hexdigest()
    assert result["template_sha512"] == image.hash_value
    # The template's guest view is recorded for warm migrations (D == B).
    assert len(image.properties["cs2os_template_guest_sha256"]) == 64
    assert int(image.properties["cs2os_template_virtual_size"]) > 0

    # CloudStack's VM is unmanaged (CloudStack forgot it: nobody can start
    # a second copy from its UI), not deleted: delete_source was not asked
    # for, and its volume files stay.
    assert cloud.vm_state(vm) == "Unmanaged"
    assert result["source_unmanaged"] is True
    assert not cloud.kvm.is_running(vm.instancename)
    assert os.path.exists(vm.volume.overlay)


def test_second_vm_of_the_template_reuses_the_image(
        conductor, conductor_api, ctxt, cloud, minicloud,
        cloudstack_root):  # noqa: F811
    first = new_vm(cloud, cloudstack_root)
    m1 = conductor_api.create_migration(ctxt, {"source": first.id})
    one = wait_state(conductor_api, ctxt, m1["id"], ("succeeded", "failed"))
    assert one["state"] == "succeeded", one["error"]
    second = new_vm(cloud, cloudstack_root, same_template_as=first.volume)
    m2 = conductor_api.create_migration(ctxt, {"source": second.name,
                                               "delete_source": True})
    two = wait_state(conductor_api, ctxt, m2["id"], ("succeeded", "failed"))
    assert two["state"] == "succeeded", two["error"]
    assert two["result"]["image_reused"] is True
    assert two["result"]["template_bytes_moved"] == 0
    assert two["resources"]["image_id"] == one["resources"]["image_id"]
    server = minicloud.conn.compute.get_server(two["resources"]["server_id"])
    wait_console(os.path.join(minicloud.instances_path, server.id,
                              "console.log"), second.volume.message)
    assert two["result"]["source_deleted"] is True
    assert cloud.vm_state(second) in ("Destroyed", "Expunged", None)


def test_cancel_during_the_copy_rolls_everything_back(
        conductor, conductor_api, ctxt, cloud, minicloud,
        cloudstack_root):  # noqa: F811
    # 60 MiB at 20 MB/s: three seconds of copy to cancel in.
    vm = new_vm(cloud, cloudstack_root,
                writes=((0x5A, 4 * MiB, 60 * MiB),))
    created = conductor_api.create_migration(ctxt, {"source": vm.name})
    wait_step(conductor_api, ctxt, created["id"], "sync")
    time.sleep(1)
    conductor_api.cancel_migration(ctxt, created["id"])
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("cancelled", "failed", "succeeded"))
    assert done["state"] == "cancelled", (done["error"], done["events"])
    undone = done["result"]["rolled_back"]
    assert any(m.startswith("deleted server") for m in undone), undone
    assert any(m.startswith("started CloudStack VM") for m in undone)
    # Nothing left in Nova, and the CloudStack VM runs again on its disk.
    server_id = next(e["message"].split()[-1] for e in done["events"]
                     if e["message"].startswith("deleted server"))
    assert minicloud.conn.compute.find_server(server_id) is None
    assert cloud.vm_state(vm) == "Running"
    wait_console(cloud.kvm.console(vm.instancename), vm.volume.message)



def test_bad_requests_fail_validation_and_touch_nothing(
        conductor, conductor_api, ctxt, cloud, minicloud,
        cloudstack_root):  # noqa: F811
    vm = new_vm(cloud, cloudstack_root)
    before = images.sha256(vm.volume.overlay)
    huge = new_vm(cloud, cloudstack_root, volume_size=16 * 1024 * MiB)
    vmware = new_vm(cloud, cloudstack_root)
    vmware.hypervisor = "VMware"
    cases = [
        ({"source": "no-such-vm-%s" % RUN_ID}, "no-such-vm"),
        ({"source": vmware.name}, "VMware"),
        ({"source": huge.name}, "no flavor has"),
        ({"source": vm.name, "host": "no-such-host"},
         "no-such-host is not a nova-compute host"),
    ]
    ids = set()
    for request, words in cases:
        created = conductor_api.create_migration(ctxt, request)
        ids.add(created["id"])
        done = wait_state(conductor_api, ctxt, created["id"],
                          ("failed", "succeeded"), timeout=120)
        assert (done["state"], done["step"]) == ("failed", "validate"), \
            (request, done["state"], done["step"])
        assert words in done["error"], (request, done["error"])
    # Nothing was created in Nova (by these migrations: other runs may use
    # the minicloud meanwhile), and the CloudStack VMs run untouched.
    assert [s.id for s in minicloud.conn.compute.servers(all_projects=True)
            if (s.metadata or {}).get("cs2os_migration_id") in ids] == []
    assert cloud.vm_state(vm) == "Running"
    assert images.sha256(vm.volume.overlay) == before


def test_conductor_killed_mid_copy_resumes(conductor, conductor_api, ctxt,
                                           cloud, minicloud,
                                           cloudstack_root):  # noqa: F811
    vm = new_vm(cloud, cloudstack_root,
                writes=((0x5A, 4 * MiB, 60 * MiB),))
    created = conductor_api.create_migration(ctxt, {"source": vm.name})
    wait_step(conductor_api, ctxt, created["id"], "sync")

    def copying():
        # The agent's first progress report: its copy has begun.  (The
        # step alone is not enough: a kill right as sync begins can come
        # before the agent got the call, and nothing is left to reuse.)
        m = conductor_api.get_migration(ctxt, created["id"])
        return m["progress_step"] == "sync" and m["bytes_done"] > 0

    ft.wait_for(copying, 120, "the agent to start copying", interval=0.2)
    conductor.kill()  # SIGKILL mid-copy: no cleanup, no rollback
    conductor.start()
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed", "cancelled"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    # The restarted conductor took it over and collected the copy the
    # agent went on with; nothing was copied twice.
    assert done["conductor"] == conductor.host
    assert done["result"]["sync"]["reused"] is True
    server = minicloud.conn.compute.get_server(
        done["resources"]["server_id"])
    assert server.status == "ACTIVE"
    wait_console(os.path.join(minicloud.instances_path, server.id,
                              "console.log"), vm.volume.message)
    # openstack server show, as an operator would look.
    shown = subprocess.run(
        [os.path.join(REPO, "tools", "minicloud", "minicloud.sh"),
         "openstack", "server", "show", server.id, "-f", "json"],
        check=True, capture_output=True, text=True).stdout
    shown = json.loads(shown[shown.index("{"):])
    assert shown["status"] == "ACTIVE"
    assert shown["name"] == vm.name


def test_failure_after_the_source_stopped_rolls_back(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        monkeypatch):  # noqa: F811
    """Primary storage loses the volume right after CloudStack stopped the
    VM (it comes back before CloudStack starts it again): the copy fails,
    the server is deleted, the VM runs again on its untouched disk."""
    vm = new_vm(cloud, cloudstack_root)
    overlay = vm.volume.overlay
    digest = images.sha256(overlay)
    hidden = overlay + ".unavailable"
    power_off, power_on = (cloudstack_handlers.power_off,
                           cloudstack_handlers.power_on)

    def off_then_lose_the_volume(c, v, forced):
        power_off(c, v, forced)
        if v is vm:
            os.rename(overlay, hidden)

    def volume_back_then_on(c, v):
        if v is vm and os.path.exists(hidden):
            os.rename(hidden, overlay)
        power_on(c, v)

    monkeypatch.setattr(cloudstack_handlers, "power_off",
                        off_then_lose_the_volume)
    monkeypatch.setattr(cloudstack_handlers, "power_on", volume_back_then_on)
    created = conductor_api.create_migration(ctxt, {"source": vm.name})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("failed", "succeeded", "cancelled"))
    assert (done["state"], done["step"]) == ("failed", "sync"), done["error"]
    assert "does not exist" in done["error"]
    undone = done["result"]["rolled_back"]
    assert [m.split()[0] for m in undone] == ["deleted", "started"], undone
    server_id = undone[0].split()[-1]
    assert minicloud.conn.compute.find_server(server_id) is None
    assert cloud.vm_state(vm) == "Running"
    wait_console(cloud.kvm.console(vm.instancename), vm.volume.message)
    assert images.sha256(overlay) == digest


def test_volume_without_backing_file_moves_whole(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    """CloudStack's FAT and SPARSE provisioning: the root volume holds the
    whole disk, no template under it.  The server boots from cs2os's blank
    placeholder image first, then the volume replaces its disk."""
    vm = new_vm(cloud, cloudstack_root, standalone=True)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    result = done["result"]
    assert result["standalone_volume"] is True
    assert result["template_bytes_moved"] == 0
    assert result["sync"]["full_copy"] is True
    image = minicloud.conn.image.get_image(done["resources"]["image_id"])
    assert image.properties.get("cs2os_placeholder") == "1"
    server_id = done["resources"]["server_id"]
    disk = os.path.join(minicloud.instances_path, server_id, "disk")
    info = qemu_img.info(disk, "qcow2", force_share=True)
    assert "backing-filename" not in info
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)
    wait_console(os.path.join(minicloud.instances_path, server_id,
                              "console.log"), vm.volume.message)
    assert minicloud.conn.compute.get_server(server_id).status == "ACTIVE"


def test_a_version_2_overlay_migrates(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    """Older CloudStack KVM hosts wrote overlays as qcow2 version 2
    (compat=0.10): no feature bits, where the format inspector would read
    a data-file bit from the bytes that follow the header."""
    vm = new_vm(cloud, cloudstack_root, compat="0.10")
    info = qemu_img.info(vm.volume.overlay, "qcow2", force_share=True)
    assert info["format-specific"]["data"]["compat"] == "0.10"
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    server_id = done["resources"]["server_id"]
    disk = os.path.join(minicloud.instances_path, server_id, "disk")
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)
    wait_console(os.path.join(minicloud.instances_path, server_id,
                              "console.log"), vm.volume.message)
    assert minicloud.conn.compute.get_server(server_id).status == "ACTIVE"


@contextlib.contextmanager
def nova_policy(rules):
    """Rules in nova-api's policy.yaml while the block runs.

    oslo.policy reads the file again when it changes; afterwards it holds
    no rule (Nova's defaults), rather than vanishing under the enforcer.
    """
    path = os.path.join(STATE_DIR, "etc", "nova", "policy.yaml")
    with open(path, "w") as f:
        json.dump(rules, f)
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write("{}\n")


def test_failure_after_the_swap_puts_nova_disk_back_and_rolls_back(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    """The last step fails: Nova's own policy refuses to start the server
    (a real 403 from nova-api) after the agent swapped the migrated disk
    in.  The rollback puts Nova's disk back, deletes the server and its
    port, and starts the CloudStack VM again on its untouched disk.

    The rule refuses starts in a project of this test's only: Nova's
    policy is the whole minicloud's, and other runs' migrations (the other
    xdist worker's) start servers meanwhile."""
    with target_project(minicloud, "e2e-%s-nostart" % ft.RUN_ID) as project:
        vm = new_vm(cloud, cloudstack_root)
        digest = images.sha256(vm.volume.overlay)
        refuse = ("rule:project_member_or_admin and not "
                  "'%s':%%(project_id)s" % project.id)
        with nova_policy({"os_compute_api:servers:start": refuse}):
            created = conductor_api.create_migration(
                ctxt, {"source": vm.name, "project": project.id})
            done = wait_state(conductor_api, ctxt, created["id"],
                              ("failed", "succeeded", "cancelled"))
        assert (done["state"], done["step"]) == ("failed", "start"), \
            (done["error"], done["events"])
        assert "os_compute_api:servers:start" in done["error"] or \
            "403" in done["error"], done["error"]
        finished = [e["step"] for e in done["events"]
                    if e["message"] == "done"]
        assert finished[-3:] == ["sync", "sync_volumes", "swap"]
        undone = done["result"]["rolled_back"]
        server_id = done["resources"].get("server_id") or \
            undone[0].split()[-1]
        assert undone[0] == "put Nova's original disk back on server %s" \
            % server_id, undone
        assert undone[1] == "deleted server %s" % server_id, undone
        assert undone[-1] == "started CloudStack VM %s again" % vm.name, undone
        assert minicloud.conn.compute.find_server(server_id) is None
        assert not os.path.exists(os.path.join(minicloud.instances_path,
                                               server_id))
        assert cloud.vm_state(vm) == "Running"
        wait_console(cloud.kvm.console(vm.instancename), vm.volume.message)
        assert images.sha256(vm.volume.overlay) == digest

        # Nova starts servers again: a retry goes all the way.
        conductor_api.retry_migration(ctxt, created["id"])
        again = wait_state(conductor_api, ctxt, created["id"],
                           ("failed", "succeeded", "cancelled"))
        assert again["state"] == "succeeded", (again["error"], again["events"])
