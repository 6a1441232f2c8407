"""Root volumes whose chain has layers between the template and the
volume (an interrupted volume snapshot leaves them): the template stays the
Glance image, the layers' data travels with the volume's, merged into it on
the compute node, and the guest sees exactly what it saw in CloudStack."""

import os

from cs2os_agent import qcow2
from cs2os_agent import qemu_img
from tests.e2e.conftest import new_vm
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_state


def _backing(path):
    with open(path, "rb") as f:
        return qcow2.inspect_header(f.read(qcow2.HEADER_BYTES), path)


def test_a_volume_with_two_layers_migrates_with_their_data(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root, layers=2)
    # The chain as CloudStack left it: A -> I1 -> I2 -> B.
    assert _backing(vm.volume.overlay).backing_file.endswith(
        os.path.basename(vm.volume.layers[0]))
    assert _backing(vm.volume.layers[1]).backing_file.endswith(
        os.path.basename(vm.volume.template))
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    # The template, not a layer, became the image.
    assert done["resources"]["template_path"].endswith(
        os.path.basename(vm.volume.template))
    assert len(done["resources"]["layers"]) == 2
    assert done["result"]["sync"]["layers_merged"] == 2
    server_id = done["resources"]["server_id"]
    disk = os.path.join(minicloud.instances_path, server_id, "disk")
    # The guest view is CloudStack's, the layers' data included, and the
    # disk's only backing file is Nova's base.
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)
    info = qemu_img.info(disk, "qcow2", force_share=True)
    assert os.path.dirname(info["backing-filename"]) == os.path.join(
        minicloud.instances_path, "_base")
    assert not [n for n in os.listdir(os.path.dirname(disk))
                if n.startswith("disk.cs2os-layer")]
    wait_console(os.path.join(minicloud.instances_path, server_id,
                              "console.log"), vm.volume.message)


def test_a_warm_migration_of_a_layered_volume_is_refused_before_anything(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root, layers=1)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host,
               "mode": "warm"})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert (done["state"], done["step"]) == ("failed", "validate")
    assert "has 1 layer(s) between it and its template" in done["error"]
    assert "use mode cold" in done["error"]
    assert not done["resources"].get("server_id")
    assert cloud.vm_state(vm) == "Running"
