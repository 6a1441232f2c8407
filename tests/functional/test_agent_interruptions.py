"""A copy can be cancelled, and survives the agent being killed."""

import os
import uuid

import oslo_messaging as messaging
import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from tools.testbed import harness
from tools.testbed import images
from tools.testbed.harness import Call
from tools.testbed.harness import wait_for

MiB = images.MiB


@pytest.fixture(scope="module")
def slow_agent(agents):
    return agents.start("throttled", max_bandwidth_mbps=40)  # 5 MB/s


def test_cancel_stops_the_copy_and_cleans_up(slow_agent, agent_api, ctxt,
                                            cloudstack_volume, nova_instance):
    vol = cloudstack_volume(writes=((0x5A, 4 * MiB, 40 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    before = images.dir_state(inst.instance_dir)
    migration = "mig-cancel-%s" % uuid.uuid4().hex
    part = os.path.join(inst.instance_dir, "disk.cs2os-staged.part")
    call = Call(agent_api.sync_overlay, ctxt, slow_agent.host, migration,
                inst.uuid, {"transport": "path", "path": vol.overlay})
    call.start()
    wait_for(lambda: os.path.exists(part) and os.path.getsize(part) > 0,
             what="the copy to start")
    answer = agent_api.cancel(ctxt, slow_agent.host, migration)
    assert answer == {"migration_id": migration, "cancelled": True}
    call.join(30)
    assert isinstance(call.error, exception.MigrationCancelled), call.error
    assert migration in str(call.error)
    assert images.dir_state(inst.instance_dir) == before
    # Nothing left to cancel now.
    again = agent_api.cancel(ctxt, slow_agent.host, migration)
    assert again["cancelled"] is False


def test_second_migration_on_a_busy_instance_is_refused(
        slow_agent, agent_api, ctxt, cloudstack_volume, nova_instance):
    vol = cloudstack_volume(writes=((0x5A, 4 * MiB, 20 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    source = {"transport": "path", "path": vol.overlay}
    call = Call(agent_api.sync_overlay, ctxt, slow_agent.host, "mig-first",
                inst.uuid, source)
    call.start()
    part = os.path.join(inst.instance_dir, "disk.cs2os-staged.part")
    wait_for(lambda: os.path.exists(part), what="the copy to start")
    with pytest.raises(exception.MigrationBusy) as err:
        agent_api.sync_overlay(ctxt, slow_agent.host, "mig-second",
                               inst.uuid, source)
    assert "mig-first" in str(err.value)
    call.join(60)
    assert call.error is None, call.error
    qemu_img.compare(vol.reference, call.result["staged_path"], "qcow2",
                     "qcow2")


def test_agent_killed_mid_copy_then_retry(agents, agent_api, ctxt,
                                          cloudstack_volume, nova_instance):
    victim = agents.start("victim", max_bandwidth_mbps=40)
    vol = cloudstack_volume(writes=((0x5A, 4 * MiB, 30 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    migration = "mig-kill-%s" % uuid.uuid4().hex
    source = {"transport": "path", "path": vol.overlay}
    part = os.path.join(inst.instance_dir, "disk.cs2os-staged.part")
    staged = os.path.join(inst.instance_dir, "disk.cs2os-staged")
    call = Call(agent_api.sync_overlay, ctxt, victim.host, migration,
                inst.uuid, source)
    call.start()
    # Kill only once a checkpoint is recorded (every 4 MiB in tests): a
    # kill before it rightly restarts at 0, which is not what this tests.
    wait_for(lambda: harness.durable_offset(part) > 0,
             what="a checkpointed partial copy")
    victim.kill()  # SIGKILL: no cleanup of any kind runs
    call.join(60)
    # The caller learns the agent is gone (call monitor), not after an hour.
    assert isinstance(call.error, messaging.MessagingTimeout), call.error
    # A half-written file is never mistaken for a finished one.
    assert os.path.exists(part)
    assert not os.path.exists(staged)

    victim.start(agent_api, ctxt)
    with pytest.raises(exception.NothingStaged):
        agent_api.swap_disk(ctxt, victim.host, migration, inst.uuid)
    killed_at = os.path.getsize(part)
    result = agent_api.sync_overlay(ctxt, victim.host, migration, inst.uuid,
                                    source)
    assert result["reused"] is False
    # It resumed at a durable checkpoint (every 4 MiB here) instead of
    # starting over, and moved only the rest.
    assert 0 < result["resumed_at"] <= killed_at
    assert result["bytes_copied"] <= os.path.getsize(vol.overlay) - result[
        "resumed_at"]
    assert not os.path.exists(part)
    assert not os.path.exists(part + ".json")
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
