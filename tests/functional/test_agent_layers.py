"""A volume whose chain has layers between the template and the overlay.

A -> I0 -> I1 -> B, as an interrupted volume snapshot leaves it on
CloudStack's primary storage: the agent copies the layers with A, merges
them into the staged file and leaves it on D alone; the guest sees what it
saw on CloudStack (``qemu-img compare`` against the chain's guest view, and
the guest's own boot message).  Bad layers are refused before a byte
moves; a cancelled copy leaves no layer behind.
"""

import os
import uuid

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from tools.testbed import harness
from tools.testbed import images
from tools.testbed.harness import Call
from tools.testbed.harness import wait_for

MiB = images.MiB


def path_source(path):
    return {"transport": "path", "path": path}


def layer_sources(volume):
    return [path_source(path) for path in volume.layers]


def layer_files(inst):
    return sorted(name for name in os.listdir(inst.instance_dir)
                  if name.startswith("disk.cs2os-layer-"))


@pytest.fixture(scope="module")
def slow_agent(agents):
    return agents.start("layers-throttled", max_bandwidth_mbps=40)  # 5 MB/s


def test_a_two_layer_chain_is_merged_and_boots(
        agent, agent_api, ctxt, cloudstack_volume, nova_instance,
        conductor_stub):
    vol = cloudstack_volume(layers=2)
    assert len(vol.layers) == 2
    # The layers matter: A on the template alone is another disk.
    assert not qemu_img.images_equal(vol.reference, vol.template, "qcow2",
                                     "qcow2")
    inst = nova_instance(vol.template, 128 * MiB)
    migration = "mig-layers-%s" % uuid.uuid4().hex
    result = agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                                    path_source(vol.overlay),
                                    layer_sources(vol))
    staged = result["staged_path"]
    assert result["reused"] is False
    assert result["layers_merged"] == 2
    layers_size = sum(os.path.getsize(p) for p in vol.layers)
    assert 0 < result["layer_bytes_copied"] <= layers_size
    assert (vol.written + result["layer_bytes_copied"]
            <= result["bytes_copied"]
            <= os.path.getsize(vol.overlay) + layers_size)
    assert (result["backing_file"], result["backing_format"]) == (
        inst.base, "raw")
    # D is the staged file's only backing file, and D has none.
    chain = qemu_img.info(staged, "qcow2", backing_chain=True)
    assert [c["filename"] for c in chain] == [staged, inst.base]
    assert chain[0]["backing-filename-format"] == "raw"
    assert "backing-filename" not in chain[1]
    assert chain[0]["virtual-size"] == 128 * MiB
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
    # The layers' own bytes, and the upper layer's over the lower one's.
    assert images.read_bytes(staged, 36 * MiB + 4096, 512) == b"\xc0" * 512
    assert images.read_bytes(staged, 37 * MiB + 4096, 512) == b"\xc1" * 512
    assert images.read_bytes(staged, 56 * MiB, 512) == b"\xc0" * 512
    assert images.read_bytes(staged, 10 * MiB, 512) == b"\0" * 512
    assert layer_files(inst) == []
    reports = conductor_stub.final_reports(migration)
    assert reports[-1]["bytes_done"] == result["bytes_copied"]
    assert reports[-1]["bytes_total"] == result["bytes_copied"]

    # The same chain again: the staged file is the answer.
    again = agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                                   path_source(vol.overlay),
                                   layer_sources(vol))
    assert again["reused"] is True
    # The layers out of order are refused and change nothing.
    before = images.dir_state(inst.instance_dir)
    with pytest.raises(exception.InvalidSource) as err:
        agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                               path_source(vol.overlay),
                               layer_sources(vol)[::-1])
    assert "layer 0" in str(err.value)
    assert "as its backing file, not this file" in str(err.value)
    assert images.dir_state(inst.instance_dir) == before

    agent_api.swap_disk(ctxt, agent.host, migration, inst.uuid)
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2")
    inst.domain.create()
    harness.wait_console(os.path.join(inst.instance_dir, "console.log"),
                         vol.message)


def _refused(agent, agent_api, ctxt, inst, vol, error):
    before = images.dir_state(inst.instance_dir)
    with pytest.raises(error) as err:
        agent_api.sync_overlay(ctxt, agent.host, "mig-bad-layer", inst.uuid,
                               path_source(vol.overlay), layer_sources(vol))
    assert images.dir_state(inst.instance_dir) == before
    assert layer_files(inst) == []
    return str(err.value)


def test_a_layer_without_backing_file_is_refused_before_copying(
        agent, agent_api, ctxt, cloudstack_volume, nova_instance):
    vol = cloudstack_volume(layers=2)
    inst = nova_instance(vol.template, 64 * MiB)
    # The bottom layer no longer names the template.
    images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "",
               vol.layers[1])
    message = _refused(agent, agent_api, ctxt, inst, vol,
                       exception.InvalidSource)
    assert "layer 1 (path:%s)" % vol.layers[1] in message
    assert "no backing file" in message


def test_a_layer_with_an_external_data_file_is_refused_before_copying(
        agent, agent_api, ctxt, cloudstack_volume, nova_instance):
    vol = cloudstack_volume(layers=1)
    inst = nova_instance(vol.template, 64 * MiB)
    # CVE-2024-32498: the layer's data would be read from any file named.
    os.unlink(vol.layers[0])
    images.run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
               "data_file=%s.data" % vol.layers[0], "-b", vol.template,
               "-F", "qcow2", vol.layers[0])
    message = _refused(agent, agent_api, ctxt, inst, vol,
                       exception.UnsafeImage)
    assert "layer 0 (path:%s)" % vol.layers[0] in message
    assert "data_file" in message


def test_cancel_during_a_layer_copy_leaves_no_layer(
        slow_agent, agent_api, ctxt, cloudstack_volume, nova_instance):
    vol = cloudstack_volume(layers=2)
    # Enough in the first layer copied for the cancel to land in it.
    images.qemu_io_write_unsafe(vol.layers[0], 0x77, 4 * MiB, 24 * MiB)
    inst = nova_instance(vol.template, 64 * MiB)
    before = images.dir_state(inst.instance_dir)
    migration = "mig-cancel-layers-%s" % uuid.uuid4().hex
    first = os.path.join(inst.instance_dir, "disk.cs2os-layer-0")
    call = Call(agent_api.sync_overlay, ctxt, slow_agent.host, migration,
                inst.uuid, path_source(vol.overlay), layer_sources(vol))
    call.start()
    wait_for(lambda: os.path.exists(first) and os.path.getsize(first) > 0,
             what="the first layer's copy to start")
    assert agent_api.cancel(ctxt, slow_agent.host, migration)["cancelled"]
    call.join(30)
    assert isinstance(call.error, exception.MigrationCancelled), call.error
    assert not os.path.exists(os.path.join(inst.instance_dir,
                                           "disk.cs2os-staged.part"))
    assert layer_files(inst) == []
    assert images.dir_state(inst.instance_dir) == before
