"""Warm migration of a VM whose data disk lives on CloudStack RBD primary
storage, end to end: the running domain reads the disk through QEMU's
librbd (a network disk ``rbd <Ceph pool>/<image>``, as CloudStack's KVM
agent writes it, logging in with a libvirt secret), and its FULL block
copy writes the whole guest view of the raw clone (its template's data
under it too) into the Cinder volume, next to the root's shallow mirror,
with one cutover for both.

The chain of test_warm_data_disks.py (its agent, conductor and helpers) on
the minicloud's real Nova, Cinder and Ceph: the CloudStack RBD pool is the
minicloud's Ceph pool, and the stand-in's KVM host logs in as the
minicloud's cephx user with the minicloud's libvirt secret (reused, as
it is; this module defines no secret).
"""

import subprocess
import uuid

import libvirt

from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import new_vm
from tests.e2e.test_data_disks import OBJECT
from tests.e2e.test_data_disks import _objects
from tests.e2e.test_data_disks import _rbd_used
from tests.e2e.test_data_disks import delete_volumes  # noqa: F401
from tests.e2e.test_data_disks import rbd
from tests.e2e.test_warm_data_disks import WARM_STEPS
from tests.e2e.test_warm_data_disks import PatientAPI
from tests.e2e.test_warm_data_disks import _write
from tests.e2e.test_warm_migration import agent  # noqa: F401
from tests.e2e.test_warm_migration import assert_migrated
from tests.e2e.test_warm_migration import conductor  # noqa: F401
from tests.e2e.test_warm_migration import kvm_conn  # noqa: F401
from tests.e2e.test_warm_migration import mirror_run_dir  # noqa: F401
from tests.e2e.test_warm_migration import wait_until
from tools.testbed import datadisks
from tools.testbed import images
from tools.testbed.harness import wait_state

MiB = images.MiB
SIZE = 40 * MiB
TEMPLATE_WRITES = [(0xB1, 0, 2 * MiB), (0xB2, 20 * MiB, 1 * MiB)]
CLONE_WRITES = [(0xB3, 1 * MiB, 2 * MiB), (0xB4, 36 * MiB, 1 * MiB)]
# Through the guest's vdb once the mirror is READY (synchronous from
# then on): over the template's data, and where nothing was.
GUEST_WRITES = [(0xB5, 20 * MiB + 4096, 64 * 1024), (0xB6, 30 * MiB, 512)]


def _compare(reference, image):
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                    reference, image], check=True, capture_output=True)


def _read_back(image, writes):
    """Each write's pattern is in the raw ``image`` (equal could also
    mean neither side got it)."""
    argv = ["qemu-io", "-r", "-f", "raw"]
    for write in writes:
        argv += ["-c", "read -P 0x%x %d %d" % write]
    out = subprocess.run(argv + [image], check=True, capture_output=True,
                         text=True).stdout
    assert "Pattern verification failed" not in out, out
    assert out.count("read ") == len(writes), out


def test_warm_migration_mirrors_a_data_disk_on_rbd_primary_storage(
        conductor, conductor_api, ctxt, cloud, minicloud,  # noqa: F811
        minicloud_volumes, cloudstack_root, kvm_conn,  # noqa: F811
        workdir, tmp_path, delete_volumes):  # noqa: F811
    info = minicloud_volumes
    conductor_api = PatientAPI(conductor_api)
    vm = new_vm(cloud, cloudstack_root)
    name = "cs2os-e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6])
    disk = datadisks.make_rbd_data_disk(
        info, str(tmp_path), name, SIZE, template_writes=TEMPLATE_WRITES,
        writes=CLONE_WRITES)
    try:
        datadisks.attach_rbd(cloud, vm, disk, info, "vdb",
                             name="DATA-" + name)
        dom = kvm_conn.lookupByName(vm.instancename)
        created = conductor_api.create_migration(ctxt, {
            "source": vm.name, "host": minicloud.compute_host,
            "mode": "warm", "cutover": "manual"})
        mid = created["id"]
        delete_volumes.append(mid)
        ready = wait_until(conductor_api, ctxt, mid, "READY",
                           lambda m: m["resources"].get("mirror_ready")
                           and m["step"] == "ready")
        # The rbd disk, found by its <Ceph pool>/<image> name.
        assert [(d["dev"], d["virtual_size"])
                for d in ready["resources"]["warm_disks"]] == [
            ("vdb", SIZE)]
        for pattern, offset, length in GUEST_WRITES:
            _write(dom, "vdb", "write -P 0x%x %d %d"
                   % (pattern, offset, length))
            images.qemu_io_write(disk.reference, "raw", pattern, offset,
                                 length)
        conductor_api.cutover_migration(ctxt, mid)
        done = wait_state(conductor_api, ctxt, mid, ("succeeded", "failed"))
        assert done["state"] == "succeeded", (done["error"], done["events"])
        assert [e["step"] for e in done["events"]
                if e["message"] == "done"] == WARM_STEPS
        assert done["result"]["cutover"]["method"] == "shutdown"

        server = assert_migrated(minicloud, done, vm, workdir)
        (result,) = done["result"]["data_disks"]
        assert (result["dev"], result["target_dev"], result["mirrored"]) \
            == ("vdb", "vdb", True)
        attachments = list(minicloud.conn.compute.volume_attachments(
            server))
        assert [(a.device, a.volume_id) for a in attachments] == [
            ("/dev/vdb", result["volume_id"])]
        volume = minicloud.conn.block_storage.get_volume(result["volume_id"])
        assert (volume.status, volume.size) == ("in-use", 1)
        # The clone's whole guest view, every guest write in it, is in the
        # volume (read from RBD directly); the source image holds the same
        # (cs2os only read it), and the volume stayed thin.
        _compare(disk.reference, rbd.rbd_uri(info, volume))
        _compare(disk.reference, disk.uri(info))
        _read_back(rbd.rbd_uri(info, volume), GUEST_WRITES)
        used = _rbd_used(info, volume)
        assert used <= len(_objects(
            TEMPLATE_WRITES + CLONE_WRITES + GUEST_WRITES)) * OBJECT
        assert cloud.vm_state(vm) == "Unmanaged"
        print("\nwarm rbd data disk: downtime %s s, bytes_moved %d, "
              "bytes_done %d/%d, volume %s used %d bytes in RBD, data disk "
              "result %s" % (done["result"].get("downtime_seconds"),
                             done["bytes_moved"], done["bytes_done"],
                             done["bytes_total"], volume.id, used, result))
    finally:
        # A failed run may leave the domain up: the image cannot go while
        # QEMU holds it open.
        try:
            dom = kvm_conn.lookupByName(vm.instancename)
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            pass
        disk.remove()
