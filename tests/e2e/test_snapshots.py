"""A CloudStack VM with VM snapshots (internal qcow2 snapshots of its root
volume, one with the guest's memory) migrates its current state; the
record says what happened to the snapshots, and only when the request
keeps them does the Nova disk hold them."""

import os
import uuid

from cs2os_agent import qemu_img
from tests.e2e.conftest import RUN_ID
from tools.testbed import images
from tools.testbed import snapshots
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_state

MiB = images.MiB

STEPS = [
    ("before upgrade", [(0xB1, 1 * MiB, 1 * MiB), (0xB2, 30 * MiB, 4 * MiB)]),
    ("live-1", [(0xB3, 1 * MiB, 1 * MiB)]),
]


def _vm_with_snapshots(cloud, cloudstack_root):
    volume = images.make_cloudstack_volume(cloudstack_root)
    snapshots.add(volume, STEPS, with_memory=("live-1",))
    vm = cloud.add_kvm_vm("e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6]),
                          volume, cloud.admin, cloud.kvm_host,
                          offering=cloud.offering)
    vm.volume = volume
    wait_console(cloud.kvm.console(vm.instancename), volume.message)
    return vm


def _migrate(conductor_api, ctxt, vm, minicloud, **request):
    created = conductor_api.create_migration(
        ctxt, dict(request, source=vm.name, host=minicloud.compute_host))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    disk = os.path.join(minicloud.instances_path,
                        done["resources"]["server_id"], "disk")
    return done, disk


def test_the_current_state_migrates_and_the_record_names_the_snapshots(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = _vm_with_snapshots(cloud, cloudstack_root)
    done, disk = _migrate(conductor_api, ctxt, vm, minicloud)
    snaps = done["result"]["internal_snapshots"]
    assert (snaps["count"], snaps["kept"]) == (2, False)
    assert [s["name"] for s in snaps["snapshots"]] == [
        "before upgrade", "live-1"]
    assert snaps["snapshots"][1]["vm_state_size"] > 0
    assert "Nova cannot use internal snapshots" in snaps["note"]
    # The 5 MiB the volume's first writes left, now the snapshots' alone,
    # and the saved memory did not move.
    assert snaps["bytes_not_copied"] >= 5 * MiB
    assert done["result"]["sync"]["bytes_copied"] <= (
        os.path.getsize(vm.volume.overlay) - snaps["bytes_not_copied"])
    assert any("holds 2 internal snapshots" in e["message"]
               for e in done["events"])
    assert snapshots.snapshot_names(disk) == []
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)
    wait_console(os.path.join(os.path.dirname(disk), "console.log"),
                 vm.volume.message)


def test_keep_snapshots_carries_every_snapshot_into_the_nova_disk(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        tmp_path):
    vm = _vm_with_snapshots(cloud, cloudstack_root)
    done, disk = _migrate(conductor_api, ctxt, vm, minicloud,
                          keep_snapshots=True)
    assert done["options"]["keep_snapshots"] is True
    snaps = done["result"]["internal_snapshots"]
    assert (snaps["count"], snaps["kept"]) == (2, True)
    assert snaps["bytes_not_copied"] == 0
    assert snapshots.snapshot_names(disk) == ["before upgrade", "live-1"]
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)
    want = snapshots.snapshot_view(vm.volume.reference, "before upgrade",
                                   str(tmp_path / "want.qcow2"))
    got = snapshots.snapshot_view(disk, "before upgrade",
                                  str(tmp_path / "got.qcow2"))
    qemu_img.compare(want, got, "qcow2", "qcow2")
    wait_console(os.path.join(os.path.dirname(disk), "console.log"),
                 vm.volume.message)
