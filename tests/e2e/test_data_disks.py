"""A CloudStack VM with data disks: each becomes a Cinder volume (RBD on
the minicloud's Ceph) attached to the migrated server in device order,
holding the disk's guest view; a rollback deletes the volumes; a project
whose Cinder quota cannot hold them is refused before anything exists.
CloudStack's data disk files are only ever read."""

import json
import os
import subprocess
import time
import uuid

import pytest

from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import new_vm
from tests.e2e.conftest import refuse_to_stop
from tests.e2e.conftest import target_project
from tools.testbed import datadisks
from tools.testbed import images
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_for
from tools.testbed.harness import wait_state
from tools.testbed.harness import wait_step
from tools.testbed.minicloud import smoke

rbd = smoke.volumes

MiB = images.MiB
GiB = 1024 * MiB
OBJECT = 4 * MiB  # RBD's default object size

# On a 48 MiB template of its own: the overlay's write covers part of
# the template's first one.
THIN = dict(size=48 * MiB, writes=[(0xD1, 1 * MiB, 2 * MiB)],
            template_writes=[(0xC1, 0, 2 * MiB), (0xC2, 40 * MiB, 1 * MiB)])
# Standalone and just over 1 GiB: a 2 GiB volume, its last MiB written.
STANDALONE = dict(size=GiB + MiB, writes=[(0xE1, 0, 1 * MiB),
                                          (0xE2, GiB, 1 * MiB)])


def _vm_with_data_disks(cloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    pool_dir = vm.volume.pool_dir
    vm.data_disks = [datadisks.make_data_disk(pool_dir, **THIN),
                     datadisks.make_data_disk(pool_dir, **STANDALONE)]
    for n, disk in enumerate(vm.data_disks):
        datadisks.attach(cloud, vm, disk, name="DATA-%d-%s" % (n, vm.name))
    vm.sums = {d.path: images.sha256(d.path) for d in vm.data_disks}
    return vm


def _ours(minicloud, migration_id):
    return [v for v in minicloud.conn.block_storage.volumes(
        details=True, all_projects=True)
        if (v.metadata or {}).get("cs2os_migration_id") == migration_id]


@pytest.fixture
def delete_volumes(minicloud):
    """The volumes of the migrations a test made, deleted afterwards (the
    servers go with the module's delete_migrated_servers)."""
    made = []
    yield made
    conn = minicloud.conn
    for migration_id in made:
        for server in conn.compute.servers(all_projects=True):
            if (server.metadata or {}).get("cs2os_migration_id") == \
                    migration_id:
                conn.compute.delete_server(server)
                conn.compute.wait_for_delete(server, wait=120)
        for volume in _ours(minicloud, migration_id):
            rbd.delete_volume(conn, volume)


@pytest.fixture(scope="module")
def volume_type(minicloud, minicloud_volumes):
    """A second volume type on the minicloud's RBD backend, for a request
    that names one; deleted after the module."""
    conn = minicloud.conn
    backend = minicloud_volumes["cinder"]["backend"]
    made = conn.block_storage.create_type(
        name="cs2os-e2e-%s" % RUN_ID,
        extra_specs={"volume_backend_name": backend})
    yield made
    conn.block_storage.delete_type(made)


def _nova_can_detach_snapshot_and_reattach(conn, server, volume_id):
    """What Nova and Cinder do with a volume they own: detach it from the
    stopped server, snapshot it, attach it again."""
    conn.compute.stop_server(server)
    conn.compute.wait_for_server(server, status="SHUTOFF", wait=120)
    conn.compute.delete_volume_attachment(server, volume_id)
    rbd.wait_volume(conn, conn.block_storage.get_volume(volume_id),
                    "available")
    snapshot = conn.block_storage.create_snapshot(volume_id=volume_id,
                                                  name="cs2os-e2e-snap")
    snapshot = conn.block_storage.wait_for_status(
        snapshot, status="available", failures=["error"], wait=120)
    conn.block_storage.delete_snapshot(snapshot)
    conn.block_storage.wait_for_delete(snapshot, wait=120)
    conn.compute.create_volume_attachment(server, volume_id=volume_id)
    return rbd.wait_volume(conn, conn.block_storage.get_volume(volume_id),
                           "in-use")


def _rbd_used(info, volume):
    ceph = info["ceph"]
    out = subprocess.run(
        ["rbd", "-c", ceph["conf"], "--id", ceph["user"], "du",
         "--format", "json", "%s/%s" % (ceph["pool"],
                                        rbd.rbd_image(info, volume))],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["images"][0]["used_size"]


def _objects(writes):
    """The RBD objects the writes touch: the most a thin volume uses."""
    return {n for _p, offset, length in writes
            for n in range(offset // OBJECT,
                           (offset + length - 1) // OBJECT + 1)}


def test_data_disks_become_attached_cinder_volumes_with_the_same_bytes(
        conductor, conductor_api, ctxt, cloud, minicloud, minicloud_volumes,
        cloudstack_root, delete_volumes, volume_type):
    info = minicloud_volumes
    vm = _vm_with_data_disks(cloud, cloudstack_root)
    request = {"source": vm.name, "host": minicloud.compute_host,
               "volume_type": volume_type.name}
    plan = conductor_api.create_migration(
        ctxt, dict(request, dry_run=True))["preflight"]["plan"]
    assert [(d["name"], d["volume_size_gib"], d["files"])
            for d in plan["data_disks"]] == [
        ("DATA-0-%s" % vm.name, 1, 2), ("DATA-1-%s" % vm.name, 2, 1)]
    assert plan["estimate"]["data_disk_bytes"] == sum(
        os.path.getsize(p) for d in vm.data_disks
        for p in (d.path, d.template) if p)
    created = conductor_api.create_migration(ctxt, request)
    delete_volumes.append(created["id"])
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    conn = minicloud.conn
    server = conn.compute.get_server(done["resources"]["server_id"])
    attachments = list(conn.compute.volume_attachments(server))
    results = done["result"]["data_disks"]
    # Device order: the guest sees the disks as CloudStack gave them.
    assert [r["name"] for r in results] == [
        "DATA-0-%s" % vm.name, "DATA-1-%s" % vm.name]
    # (Nova lists attachments in no particular order: by device here.)
    assert sorted((a.device, a.volume_id) for a in attachments) == [
        ("/dev/vdb", results[0]["volume_id"]),
        ("/dev/vdc", results[1]["volume_id"])]
    assert [r["target_dev"] for r in results] == ["vdb", "vdc"]
    # The domain Nova defined: the disks in that order, by serial.
    assert [(d["target"], d["serial"]) for d in rbd.domain_rbd_disks(
        info, server)] == [("vdb", results[0]["volume_id"]),
                           ("vdc", results[1]["volume_id"])]
    for result, disk, spec in zip(results, vm.data_disks,
                                  (THIN, STANDALONE), strict=True):
        volume = conn.block_storage.get_volume(result["volume_id"])
        assert volume.status == "in-use"
        assert volume.size == -(-spec["size"] // GiB)
        assert volume.volume_type == volume_type.name
        assert volume.project_id == server.project_id
        assert result["verified"] is True
        # The guest view, read from RBD directly.
        subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw",
                        disk.reference, rbd.rbd_uri(info, volume)],
                       check=True, capture_output=True)
        # Only what the files hold moved, and the volume stayed thin.
        on_pool = sum(os.stat(p).st_blocks * 512
                      for p in (disk.path, disk.template) if p)
        assert disk.written <= result["bytes_copied"] <= on_pool * 1.01
        writes = spec["writes"] + spec.get("template_writes", [])
        assert _rbd_used(info, volume) <= len(_objects(writes)) * OBJECT
    assert {d.path: images.sha256(d.path) for d in vm.data_disks} == vm.sums
    # bytes_moved: every copy that crossed the wire, as the result names
    # them (the template upload, the root overlay's sync, each data
    # disk); bytes_done is only the last copy's progress.
    copies = [done["result"]["template_bytes_moved"],
              done["result"]["sync"]["bytes_copied"]] + [
        r["bytes_copied"] for r in results]
    assert all(isinstance(c, int) for c in copies), copies
    assert done["bytes_moved"] == sum(copies)
    assert done["bytes_moved"] > done["bytes_done"] > 0
    assert done["options"]["volume_type"] == volume_type.name
    again = _nova_can_detach_snapshot_and_reattach(
        conn, server, results[1]["volume_id"])
    assert [a["server_id"] for a in again.attachments] == [server.id]


def test_a_data_disk_on_rbd_primary_storage_moves_its_guest_view(
        conductor, conductor_api, ctxt, cloud, minicloud, minicloud_volumes,
        cloudstack_root, delete_volumes, tmp_path):
    info = minicloud_volumes
    vm = new_vm(cloud, cloudstack_root)
    name = "cs2os-e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6])
    disk = datadisks.make_rbd_data_disk(
        info, str(tmp_path), name, 40 * MiB,
        template_writes=[(0xB1, 0, 2 * MiB), (0xB2, 20 * MiB, 1 * MiB)],
        writes=[(0xB3, 1 * MiB, 2 * MiB), (0xB4, 36 * MiB, 1 * MiB)])
    try:
        pool = cloud.add_storage_pool(vm.zone, "ceph-" + name, type="RBD",
                                      path=disk.pool, ipaddress="127.0.0.1")
        cloud.add_data_disk(vm, pool, disk.image, disk.size,
                            name="DATA-" + name)
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "host": minicloud.compute_host})
        delete_volumes.append(created["id"])
        done = wait_state(conductor_api, ctxt, created["id"],
                          ("succeeded", "failed"))
        assert done["state"] == "succeeded", (done["error"], done["events"])
        (result,) = done["result"]["data_disks"]
        assert (result["files"], result["verified"]) == (1, True)
        volume = minicloud.conn.block_storage.get_volume(result["volume_id"])
        assert volume.status == "in-use" and volume.size == 1
        # The clone's whole guest view (the template's data under it too)
        # is in the volume, and the clone is as it was.
        for image in (rbd.rbd_uri(info, volume), disk.uri(info)):
            subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                            disk.reference, image], check=True,
                           capture_output=True)
        # Only the extents: 2 MiB + 1 MiB of the template where the clone
        # did not write, the clone's 3 MiB (in whole RBD objects at most).
        assert 5 * MiB <= result["bytes_copied"] <= 4 * OBJECT
    finally:
        disk.remove()


def test_a_vm_whose_root_and_data_disks_live_on_rbd_primary_storage(
        conductor, conductor_api, ctxt, cloud, minicloud, minicloud_volumes,
        tmp_path, delete_volumes):
    """Root and data disk are clones of template snapshots in CloudStack's
    RBD pool (the VM stopped: the stand-in runs file-backed domains only);
    the Nova server boots the root's guest view, the volume holds the
    data disk's."""
    info = minicloud_volumes
    name = "cs2os-e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6])
    message = "cs2os e2e root on rbd %s" % name[-6:]
    root = datadisks.make_rbd_data_disk(
        info, str(tmp_path), name + "-root", 64 * MiB,
        template_writes=[(0x11, 10 * MiB, 2 * MiB)],
        template_bytes=[(0, images.boot_sector(64 * MiB)
                         + images.message_sector("template"))],
        writes=[(0x12, 30 * MiB, 1 * MiB)],
        clone_bytes=[(512, images.message_sector(message))])
    data = datadisks.make_rbd_data_disk(
        info, str(tmp_path), name + "-data", 20 * MiB,
        template_writes=[(0x21, 0, 1 * MiB)],
        writes=[(0x22, 8 * MiB, 1 * MiB)])
    try:
        pool = cloud.add_storage_pool(cloud.kvm_host.zone, "ceph-" + name,
                                      type="RBD", path=root.pool,
                                      ipaddress="127.0.0.1")
        template = cloud.add_template(cloud.kvm_host.zone, "tmpl-" + name,
                                      64 * MiB, cloud.admin)
        vm = cloud.add_vm(name, cloud.admin, cloud.kvm_host, template,
                          cloud.offering, pool, root.image, 64 * MiB)
        cloud.add_data_disk(vm, pool, data.image, data.size,
                            name="DATA-" + name)
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "host": minicloud.compute_host})
        delete_volumes.append(created["id"])
        done = wait_state(conductor_api, ctxt, created["id"],
                          ("succeeded", "failed"))
        assert done["state"] == "succeeded", (done["error"], done["events"])
        sync = done["result"]["sync"]
        assert (sync["format"], sync["full_copy"]) == ("raw", True)
        server_id = done["resources"]["server_id"]
        disk = os.path.join(minicloud.instances_path, server_id, "disk")
        subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", "-F",
                        "qcow2", root.reference, disk], check=True,
                       capture_output=True)
        wait_console(os.path.join(minicloud.instances_path, server_id,
                                  "console.log"), message)
        (result,) = done["result"]["data_disks"]
        volume = minicloud.conn.block_storage.get_volume(result["volume_id"])
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                        data.reference, rbd.rbd_uri(info, volume)],
                       check=True, capture_output=True)
    finally:
        root.remove()
        data.remove()


def test_a_rollback_deletes_the_volumes_it_made(
        conductor, conductor_api, ctxt, cloud, minicloud, minicloud_volumes,
        cloudstack_root, monkeypatch, delete_volumes):
    vm = _vm_with_data_disks(cloud, cloudstack_root)
    refuse_to_stop(monkeypatch, vm)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    delete_volumes.append(created["id"])
    done = wait_state(conductor_api, ctxt, created["id"], ("failed",))
    assert "hypervisor busy" in done["error"]
    (deleted,) = [e["message"] for e in done["events"]
                  if e["step"] == "rollback"
                  and e["message"].startswith("deleted volumes ")]
    volume_ids = deleted[len("deleted volumes "):].split(", ")
    assert len(volume_ids) == 2
    assert any(e["step"] == "volumes" for e in done["events"])
    assert _ours(minicloud, created["id"]) == []
    left = set(rbd.rbd_images(minicloud_volumes))
    assert not {minicloud_volumes["cinder"]["image_name_template"] % v
                for v in volume_ids} & left
    assert {d.path: images.sha256(d.path) for d in vm.data_disks} == vm.sums
    assert cloud.vm_state(vm) == "Running"


def test_data_disks_over_the_cinder_quota_are_refused_before_anything(
        conductor, conductor_api, ctxt, cloud, minicloud, minicloud_volumes,
        cloudstack_root, delete_volumes):
    vm = _vm_with_data_disks(cloud, cloudstack_root)
    name = "cs2os-e2e-quota-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6])
    with target_project(minicloud, name) as project:
        # 2 GiB left: the two disks need 1 + 2.
        minicloud.conn.set_volume_quotas(project.id, gigabytes=2)
        request = {"source": vm.name, "host": minicloud.compute_host,
                   "project": project.id}
        report = conductor_api.create_migration(
            ctxt, dict(request, dry_run=True))["preflight"]
        (finding,) = [f for f in report["findings"]
                      if f["check"] == "data_disks"]
        assert finding["severity"] == "critical"
        assert "leaves 2 GiB" in finding["message"]
        assert report["ok"] is False
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "host": minicloud.compute_host,
                   "project": project.id})
        delete_volumes.append(created["id"])
        done = wait_state(conductor_api, ctxt, created["id"], ("failed",))
        assert "Cinder quota" in done["error"]
        assert "3 GiB" in done["error"] and "leaves 2 GiB" in done["error"]
        assert done["step"] == "validate"
        assert done["resources"].get("server_id") is None
        conn = minicloud.conn
        assert list(conn.block_storage.volumes(
            all_projects=True, project_id=project.id)) == []
        assert list(conn.compute.servers(all_projects=True,
                                         project_id=project.id)) == []
    assert cloud.vm_state(vm) == "Running"


def test_a_cancel_stops_a_data_disk_copy_at_once(
        conductor, conductor_api, ctxt, cloud, minicloud, minicloud_volumes,
        cloudstack_root, delete_volumes):
    """A cancel during sync_volumes reaches the agent mid-copy: 240 MiB at
    the module agent's 20 MB/s would take 12 s more; the step ends within
    a few seconds, everything rolls back and the disk is as it was."""
    vm = new_vm(cloud, cloudstack_root)
    disk = datadisks.make_data_disk(vm.volume.pool_dir, 256 * MiB,
                                    writes=[(0xA7, 0, 240 * MiB)])
    datadisks.attach(cloud, vm, disk, name="DATA-cancel-" + vm.name)
    before = images.sha256(disk.path)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    delete_volumes.append(created["id"])
    wait_step(conductor_api, ctxt, created["id"], "sync_volumes")
    time.sleep(1)
    asked = time.monotonic()
    conductor_api.cancel_migration(ctxt, created["id"])
    wait_for(lambda: any(
        (e["step"], e["message"]) == ("sync_volumes", "cancelled")
        for e in conductor_api.get_migration(ctxt, created["id"])["events"]),
        60, "the copy to stop", interval=0.2)
    stopped_after = time.monotonic() - asked
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("cancelled", "failed", "succeeded"))
    assert done["state"] == "cancelled", (done["error"], done["events"])
    assert stopped_after < 6, stopped_after
    assert _ours(minicloud, created["id"]) == []
    assert images.sha256(disk.path) == before
    assert cloud.vm_state(vm) == "Running"
