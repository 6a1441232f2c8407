"""The agent adopts a CloudStack overlay into a Nova instance, for real.

A CloudStack-like chain (template B, overlay A whose header names
/mnt/<pool>/<template>), a Nova-like instance (raw base D in _base, qcow2
disk C on D, a persistent KVM domain), RabbitMQ, and cs2os-agent as its own
process driven over RPC.  Guest-visible content is proven with
``qemu-img compare`` against A rebased onto B.
"""

import os
import uuid

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from tools.testbed import harness
from tools.testbed import images

MiB = images.MiB
SHUTOFF = 5  # libvirt.VIR_DOMAIN_SHUTOFF
RUNNING = 1  # libvirt.VIR_DOMAIN_RUNNING


def path_source(volume):
    return {"transport": "path", "path": volume.overlay}


def state(domain):
    return domain.state()[0]


def console(inst):
    return os.path.join(inst.instance_dir, "console.log")


def test_agent_info(agent, agent_api, ctxt):
    info = agent_api.get_agent_info(ctxt, agent.host)
    assert info["host"] == agent.host
    assert info["rpc_api_version"] == "1.6"
    assert "path" in info["transports"]
    assert info["libvirt_version"] >= 9000000


def test_probe_instance(agent, agent_api, ctxt, cloudstack_volume,
                        nova_instance):
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 128 * MiB, start=True)
    probe = agent_api.probe_instance(ctxt, agent.host, inst.uuid)
    assert probe["disk_path"] == inst.disk
    assert probe["disk_format"] == "qcow2"
    assert probe["backing_file"] == inst.base
    assert probe["backing_format"] == "raw"
    assert probe["virtual_size"] == 128 * MiB
    assert probe["domain_state"] == "running"
    assert probe["domain_name"] == inst.domain_name
    assert (probe["staged"], probe["swapped"]) == (False, False)


def test_cold_migration_end_to_end(agent, agent_api, ctxt, cloudstack_volume,
                                   nova_instance, conductor_stub):
    vol = cloudstack_volume()
    # A booted Nova server, as after step 3 of the method.
    inst = nova_instance(vol.template, 128 * MiB, start=True)
    # The guest booted from the Glance image (the template), as Nova does.
    harness.wait_console(console(inst), vol.template_message)
    nova_disk_before = images.sha256(inst.disk)
    migration = "mig-%s" % uuid.uuid4().hex

    result = agent_api.sync_overlay(
        ctxt, agent.host, migration, inst.uuid, path_source(vol)
    )
    staged = os.path.join(inst.instance_dir, "disk.cs2os-staged")
    assert result["staged_path"] == staged
    assert result["reused"] is False
    assert result["full_copy"] is False
    assert result["backing_file"] == inst.base
    assert result["backing_format"] == "raw"
    assert result["virtual_size"] == 128 * MiB
    assert result["source_virtual_size"] == 64 * MiB
    assert result["grown"] is True
    # Only the overlay moved: its data plus qcow2 metadata, never B.
    assert vol.written <= result["bytes_copied"] <= os.path.getsize(
        vol.overlay)
    info = qemu_img.info(staged, "qcow2")
    assert info["backing-filename"] == inst.base
    assert info["backing-filename-format"] == "raw"
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
    # The agent reported progress to the conductor topic, ending at 100%.
    reports = conductor_stub.final_reports(migration)
    assert reports[-1]["bytes_done"] == result["bytes_copied"]

    # Swap refuses while the domain runs, and changes nothing.
    before = images.dir_state(inst.instance_dir)
    with pytest.raises(exception.DomainNotShutOff) as err:
        agent_api.swap_disk(ctxt, agent.host, migration, inst.uuid)
    assert "running" in str(err.value)
    assert images.dir_state(inst.instance_dir) == before

    inst.domain.destroy()  # Nova's stop
    swapped = agent_api.swap_disk(ctxt, agent.host, migration, inst.uuid)
    assert swapped["swapped"] is True
    orig = os.path.join(inst.instance_dir, "disk.cs2os-orig")
    assert images.sha256(orig) == nova_disk_before
    assert not os.path.exists(staged)
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2")

    inst.domain.create()  # Nova's start
    # The guest now boots the CloudStack VM's disk: its own bytes say so.
    harness.wait_console(console(inst), vol.message)
    assert state(inst.domain) == RUNNING
    probe = agent_api.probe_instance(ctxt, agent.host, inst.uuid)
    assert probe["backing_file"] == inst.base
    assert probe["swapped"] is True
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2",
                     force_share=True)

    removed = agent_api.cleanup(ctxt, agent.host, migration, inst.uuid)
    assert orig in removed["removed"]
    assert sorted(os.listdir(inst.instance_dir)) == [
        "console.log", "disk", "disk.info"]
    assert state(inst.domain) == RUNNING


def test_rollback_and_retry(agent, agent_api, ctxt, cloudstack_volume,
                            nova_instance):
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 64 * MiB)
    nova_disk = images.sha256(inst.disk)
    migration = "mig-%s" % uuid.uuid4().hex
    agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                           path_source(vol))
    assert agent_api.swap_disk(
        ctxt, agent.host, migration, inst.uuid)["swapped"] is True

    restored = agent_api.restore_disk(ctxt, agent.host, migration, inst.uuid)
    assert restored["restored"] is True
    assert images.sha256(inst.disk) == nova_disk
    assert not os.path.exists(inst.disk + ".cs2os-orig")
    # Restoring twice is harmless.
    again = agent_api.restore_disk(ctxt, agent.host, migration, inst.uuid)
    assert again["restored"] is False
    assert images.sha256(inst.disk) == nova_disk
    # The server boots as Nova made it.
    inst.domain.create()
    harness.wait_console(console(inst), vol.template_message)
    inst.domain.destroy()

    # The migrated disk was kept: a retry swaps it in without copying.
    retry = agent_api.sync_overlay(ctxt, agent.host, migration, inst.uuid,
                                   path_source(vol))
    assert retry["reused"] is True
    assert agent_api.swap_disk(
        ctxt, agent.host, migration, inst.uuid)["swapped"] is True
    assert agent_api.swap_disk(
        ctxt, agent.host, migration, inst.uuid)["swapped"] is False
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2")
    inst.domain.create()
    harness.wait_console(console(inst), vol.message)


def test_sync_is_idempotent_per_migration_and_source(
        agent, agent_api, ctxt, cloudstack_volume, nova_instance):
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 64 * MiB)
    first = agent_api.sync_overlay(ctxt, agent.host, "mig-a", inst.uuid,
                                   path_source(vol))
    second = agent_api.sync_overlay(ctxt, agent.host, "mig-a", inst.uuid,
                                    path_source(vol))
    assert (first["reused"], second["reused"]) == (False, True)
    assert second["bytes_copied"] == first["bytes_copied"]
    # The source changed (the VM wrote to it): copy again.
    images.qemu_io_write(vol.reference, "qcow2", 0xEE, 5 * MiB, MiB)
    images.qemu_io_write_unsafe(vol.overlay, 0xEE, 5 * MiB, MiB)
    third = agent_api.sync_overlay(ctxt, agent.host, "mig-a", inst.uuid,
                                   path_source(vol))
    assert third["reused"] is False
    qemu_img.compare(vol.reference, third["staged_path"], "qcow2", "qcow2")


def test_sparse_volume_without_backing_is_copied_whole(
        agent, agent_api, ctxt, cloudstack_root, cloudstack_volume,
        nova_instance):
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 128 * MiB)
    # CloudStack FAT/SPARSE provisioning: a standalone qcow2 of the volume.
    standalone = os.path.join(vol.pool_dir, str(uuid.uuid4()))
    images.run("qemu-img", "convert", "-f", "qcow2", "-O", "qcow2",
               vol.reference, standalone)
    result = agent_api.sync_overlay(
        ctxt, agent.host, "mig-fat", inst.uuid,
        {"transport": "path", "path": standalone})
    assert result["full_copy"] is True
    assert "no backing file" in result["note"]
    assert result["backing_file"] is None
    assert result["virtual_size"] == 128 * MiB
    info = qemu_img.info(result["staged_path"], "qcow2")
    assert "backing-filename" not in info
    qemu_img.compare(vol.reference, result["staged_path"], "qcow2", "qcow2")
    agent_api.swap_disk(ctxt, agent.host, "mig-fat", inst.uuid)
    inst.domain.create()
    harness.wait_console(console(inst), vol.message)


def test_a_raw_root_volume_is_staged_as_a_standalone_qcow2(
        agent, agent_api, ctxt, cloudstack_volume, nova_instance):
    """As a root volume on CloudStack RBD primary storage arrives (the rbd
    transport's e2e test reads RBD itself): one raw image, holes and all,
    here through the path transport."""
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 128 * MiB)
    raw = os.path.join(vol.pool_dir, str(uuid.uuid4()))
    images.run("qemu-img", "convert", "-f", "qcow2", "-O", "raw",
               vol.reference, raw)
    result = agent_api.sync_overlay(
        ctxt, agent.host, "mig-raw", inst.uuid,
        {"transport": "path", "path": raw}, fmt="raw")
    assert (result["full_copy"], result["format"]) == (True, "raw")
    assert result["bytes_copied"] <= os.stat(raw).st_blocks * 512
    assert result["virtual_size"] == 128 * MiB
    info = qemu_img.info(result["staged_path"], "qcow2")
    assert "backing-filename" not in info
    qemu_img.compare(vol.reference, result["staged_path"], "qcow2", "qcow2")
    # The same call again: the staged file is reused, not copied again.
    again = agent_api.sync_overlay(
        ctxt, agent.host, "mig-raw", inst.uuid,
        {"transport": "path", "path": raw}, fmt="raw")
    assert again["reused"] is True
    agent_api.swap_disk(ctxt, agent.host, "mig-raw", inst.uuid)
    inst.domain.create()
    harness.wait_console(console(inst), vol.message)


def test_bandwidth_limit_and_progress(agents, agent_api, ctxt,
                                      cloudstack_volume, nova_instance,
                                      conductor_stub):
    slow = agents.start("slow", max_bandwidth_mbps=40)  # 5 MB/s
    vol = cloudstack_volume(writes=((0x5A, 4 * MiB, 20 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    result = agent_api.sync_overlay(ctxt, slow.host, "mig-slow", inst.uuid,
                                    path_source(vol))
    # 20 MiB at 5 MB/s cannot take less than ~4 s.
    assert result["seconds"] >= result["bytes_copied"] / 5e6 * 0.95
    # Longer than the RPC timeout: the call monitor kept the call alive.
    assert result["seconds"] > harness.RPC_RESPONSE_TIMEOUT
    reports = conductor_stub.final_reports("mig-slow")
    # progress_interval is 1 s: intermediate reports, then the final one.
    assert len(reports) >= 2
    assert reports[0]["bytes_done"] < reports[-1]["bytes_done"]
    assert reports[-1]["bytes_done"] == reports[-1]["bytes_total"]
    assert all(0 < p["rate_bps"] <= 5.25e6 for p in reports)
    assert "mig-slow sync_overlay:" in slow.log()
