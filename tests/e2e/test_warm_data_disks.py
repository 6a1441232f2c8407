"""Warm migration of a VM with data disks, end to end: every disk, root
and data, is mirrored while the guest writes to all of them, and one
cutover switches them over together.

The chain of test_warm_migration.py (its agent, conductor and helpers),
plus the minicloud's real Cinder on its real Ceph: each data disk's mirror
writes through the agent's qemu-storage-daemon (QEMU's librbd, the key
from Nova's libvirt secret) straight into the RBD image of the Cinder
volume Nova attached to the stopped server.  The CloudStack VM's data
disks are hot-plugged into its running domain, as CloudStack attaches a
volume to a running VM.

The conductor reaches the KVM host over qemu+ssh (sourcehost/kvmhost.py
says why qemu+libssh is refused: libvirt 9.0's libssh transport stalls
every reply over 4 KiB, and a keepalive ending the stall crashed the
conductor in libvirt.so on its next call; this domain's XML is 5 KiB).
"""

import os
import shutil
import subprocess
import time
import uuid
from xml.sax import saxutils

import libvirt
import libvirt_qemu
import oslo_messaging as messaging

from tests.e2e.conftest import new_vm
from tests.e2e.test_data_disks import OBJECT
from tests.e2e.test_data_disks import STANDALONE
from tests.e2e.test_data_disks import THIN
from tests.e2e.test_data_disks import _objects
from tests.e2e.test_data_disks import _ours
from tests.e2e.test_data_disks import _rbd_used
from tests.e2e.test_data_disks import delete_volumes  # noqa: F401
from tests.e2e.test_data_disks import rbd
from tests.e2e.test_warm_migration import agent  # noqa: F401
from tests.e2e.test_warm_migration import assert_migrated
from tests.e2e.test_warm_migration import assert_target_cleaned
from tests.e2e.test_warm_migration import conductor  # noqa: F401
from tests.e2e.test_warm_migration import held_migration
from tests.e2e.test_warm_migration import kvm_conn  # noqa: F401
from tests.e2e.test_warm_migration import mirror_run_dir  # noqa: F401
from tests.e2e.test_warm_migration import wait_until
from tools.testbed import datadisks
from tools.testbed import images
from tools.testbed import warm_chain
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_state

MiB = images.MiB
WARM_STEPS = ["validate", "image", "ports", "boot", "mirror", "ready",
              "cutover", "finish", "swap", "start", "stop_source", "cleanup",
              "retire_source"]
DEVS = ("vdb", "vdc")
# The conductor's mirror cap here (test_warm_migration's conductor fixture
# reads it): the shipped default, unlimited.  A data disk's FULL mirror
# counts its empty part against a cap (libvirt gives the copy's target the
# source disk's discard setting, and this virtio disk has none, as
# CloudStack's): at 10 MB/s the 1 GiB standalone disk took 108 s to READY
# (operator guide, "Known limit").
MIRROR_MBPS = 0


def hotplug(cloud, dom, disk, dev, serial):
    """Attach ``disk`` to the running domain (its chain explicit, as the
    stand-in's KVM does for the root)."""
    xml = ("<disk type='file' device='disk'><driver name='qemu' "
           "type='qcow2'/><source file=%s/>%s<target dev=%s bus='virtio'/>"
           "<serial>%s</serial></disk>"
           % (saxutils.quoteattr(disk.path),
              cloud.kvm._backing_xml(disk.path), saxutils.quoteattr(dev),
              saxutils.escape(serial)))
    dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def _vm_with_running_data_disks(cloud, cloudstack_root, conn):
    vm = new_vm(cloud, cloudstack_root,
                writes=((0x5A, 4 * MiB, 8 * MiB),))
    vm.data_disks = [datadisks.make_data_disk(vm.volume.pool_dir, **THIN),
                     datadisks.make_data_disk(vm.volume.pool_dir,
                                              **STANDALONE)]
    dom = conn.lookupByName(vm.instancename)
    for n, (disk, dev) in enumerate(zip(vm.data_disks, DEVS, strict=True)):
        volume = datadisks.attach(cloud, vm, disk,
                                  name="DATA-%d-%s" % (n, vm.name))
        hotplug(cloud, dom, disk, dev, volume.id)
    vm.templates = {disk.template: images.sha256(disk.template)
                    for disk in vm.data_disks if disk.template}
    return vm, dom


def _write(dom, dev, spec):
    """A guest write through the device ``dev`` of the running domain."""
    alias = "virtio-disk%d" % (ord(dev[-1]) - ord("a"))
    out = libvirt_qemu.qemuMonitorCommand(
        dom, 'qemu-io -d /machine/peripheral/%s/virtio-backend "%s"'
        % (alias, spec), libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    assert not out.strip(), "qemu-io %s %r: %s" % (dev, spec, out)


def _disk_view(disk, workdir):
    """The data disk's guest view now that its domain ended: the file
    itself, or a copy of its header pointed at the local template."""
    if disk.template is None:
        return disk.path, False
    view = os.path.join(workdir, "view-%s.qcow2" % uuid.uuid4().hex)
    shutil.copyfile(disk.path, view)
    images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b",
               disk.template, "-F", "qcow2", view)
    return view, True


class PatientAPI:
    """The conductor's RPC client, its read-only get_migration repeated
    when one poll is not answered in time: on this 2-core machine a busy
    conductor may miss the test's short RPC timeout (the migration's own
    deadlines are the conductor's, not this poll's)."""

    def __init__(self, api, attempts=90):
        self._api, self._attempts = api, attempts

    def __getattr__(self, name):
        return getattr(self._api, name)

    def get_migration(self, ctxt, migration_id):
        for attempt in range(self._attempts):
            try:
                return self._api.get_migration(ctxt, migration_id)
            except messaging.MessagingTimeout:
                if attempt == self._attempts - 1:
                    raise
                time.sleep(1)
        return None


def _no_block_jobs(dom):
    return all(not dom.blockJobInfo(dev, 0) for dev in ("vda",) + DEVS)


def test_warm_migration_mirrors_every_disk_and_cuts_over_once(
        conductor, conductor_api, ctxt, cloud, minicloud,  # noqa: F811
        minicloud_volumes, cloudstack_root, kvm_conn,  # noqa: F811
        workdir, delete_volumes):  # noqa: F811
    info = minicloud_volumes
    conductor_api = PatientAPI(conductor_api)
    vm, dom = _vm_with_running_data_disks(cloud, cloudstack_root, kvm_conn)
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host, "mode": "warm",
        "cutover": "manual"})
    mid = created["id"]
    delete_volumes.append(mid)
    # (pattern, offset, length) per disk, written by the guest meanwhile.
    written = {"vda": [], "vdb": [], "vdc": []}

    def write(dev, pattern, offset, length):
        _write(dom, dev, "write -P 0x%x %d %d" % (pattern, offset, length))
        written[dev].append((pattern, offset, length))

    wait_until(conductor_api, ctxt, mid, "every mirror started",
               lambda m: m["resources"].get("mirror_started"))
    # Right after the mirrors started (uncapped: maybe already READY).
    write("vda", 0x11, 8 * MiB, MiB)
    write("vdb", 0x12, 44 * MiB, 256 * 1024)  # template-only: copy on write
    write("vdc", 0x13, 512 * MiB, MiB)  # unallocated until now
    ready = wait_until(conductor_api, ctxt, mid, "READY",
                       lambda m: m["resources"].get("mirror_ready"))
    assert [m["dev"] for m in ready["resources"]["volume_mirrors"]] == \
        list(DEVS)
    # READY: every write lands on both sides, on every disk.
    write("vda", 0x21, 4 * MiB, 64 * 1024)
    write("vdb", 0x22, 0, 4096)
    write("vdb", 0x23, 47 * MiB, MiB)
    write("vdc", 0x24, 1024 * MiB, 64 * 1024)
    write("vdc", 0x25, 100 * MiB, 512)
    held = conductor_api.get_migration(ctxt, mid)
    assert (held["state"], held["step"]) == ("running", "ready")
    assert held["bytes_done"] == held["bytes_total"]
    conductor_api.cutover_migration(ctxt, mid)
    done = wait_state(conductor_api, ctxt, mid, ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert [e["step"] for e in done["events"] if e["message"] == "done"] \
        == WARM_STEPS
    cutover = done["result"]["cutover"]
    assert cutover["method"] == "shutdown"
    # Three jobs, one shutdown: proven for all of them at once.
    assert cutover["proven_by"] in ("job ended after the shutdown",
                                    "domain shut down", "domain destroyed")

    # The root: Nova's disk shows the source's chain, every write in it.
    patterns = ["read -P 0x%x %d %d" % w for w in written["vda"]]
    server = assert_migrated(minicloud, done, vm, workdir, patterns)

    # The data disks: attached in device order, each volume's guest view
    # (read from RBD directly) the source disk's, every write in it.
    results = done["result"]["data_disks"]
    assert [r["dev"] for r in results] == list(DEVS)
    assert [r["target_dev"] for r in results] == list(DEVS)
    attachments = list(minicloud.conn.compute.volume_attachments(server))
    assert sorted((a.device, a.volume_id) for a in attachments) == [
        ("/dev/%s" % dev, r["volume_id"])
        for dev, r in zip(DEVS, results, strict=True)]
    conn = minicloud.conn
    for result, disk, spec, dev in zip(results, vm.data_disks,
                                       (THIN, STANDALONE), DEVS,
                                       strict=True):
        volume = conn.block_storage.get_volume(result["volume_id"])
        assert volume.status == "in-use"
        view, temporary = _disk_view(disk, workdir)
        try:
            subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F",
                            "raw", "-U", view, rbd.rbd_uri(info, volume)],
                           check=True, capture_output=True)
            warm_chain.read_back(view, *["read -P 0x%x %d %d" % w
                                         for w in written[dev]])
        finally:
            if temporary:
                os.unlink(view)
        # Thin: the mirror wrote what the disk holds, zeros unmapped.
        writes = (spec["writes"] + spec.get("template_writes", [])
                  + written[dev])
        assert _rbd_used(info, volume) <= len(_objects(writes)) * OBJECT
    # cs2os wrote no CloudStack file: the templates are as made.
    assert {t: images.sha256(t) for t in vm.templates} == vm.templates
    assert cloud.vm_state(vm) == "Unmanaged"


def test_cancel_after_the_data_disk_mirrors_started_deletes_the_volumes(
        conductor, conductor_api, ctxt, cloud, minicloud,  # noqa: F811
        minicloud_volumes, cloudstack_root, kvm_conn,  # noqa: F811
        mirror_run_dir, delete_volumes):  # noqa: F811
    conductor_api = PatientAPI(conductor_api)
    vm, dom = _vm_with_running_data_disks(cloud, cloudstack_root, kvm_conn)
    sums = {d.path: images.sha256(d.path) for d in vm.data_disks}
    mid, held = held_migration(conductor_api, ctxt, minicloud, vm)
    delete_volumes.append(mid)
    mirrors = held["resources"]["volume_mirrors"]
    assert [m["dev"] for m in mirrors] == list(DEVS)
    assert all(m["qsd_pid"] and m["tunnel_pid"] for m in mirrors)
    volume_ids = [m["volume_id"] for m in mirrors]
    conductor_api.cancel_migration(ctxt, mid)
    done = wait_state(conductor_api, ctxt, mid,
                      ("cancelled", "failed", "succeeded"))
    assert done["state"] == "cancelled", (done["error"], done["events"])
    rolled_back = done["result"]["rolled_back"]
    assert rolled_back[0] == "ended the block copy"
    assert rolled_back[1] == (
        "removed the mirror targets of volumes %s; removed the mirror "
        "target on %s" % (", ".join(volume_ids), minicloud.compute_host))
    assert any(m.startswith("deleted volumes ") for m in rolled_back)
    # Every job ended, every target gone, the volumes deleted.
    assert _no_block_jobs(dom)
    for mirror in mirrors:
        assert_target_cleaned(minicloud, dict(done, resources={
            "mirror": mirror}), mirror_run_dir)
    assert _ours(minicloud, mid) == []
    left = set(rbd.rbd_images(minicloud_volumes))
    assert not {minicloud_volumes["cinder"]["image_name_template"] % v
                for v in volume_ids} & left
    # The source runs on, on its own disks, which nobody wrote.
    assert cloud.vm_state(vm) == "Running"
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert {d.path: images.sha256(d.path) for d in vm.data_disks} == sums
    _write(dom, "vdc", "write -P 0x77 0 4096")  # and writes to them
    wait_console(cloud.kvm.console(vm.instancename), vm.volume.message)

