"""The agent's mirror RPC API 1.1, end to end on a real agent process.

On the testbed of tests/functional/mirror_fixtures.py, an agent whose ssh
key and known_hosts reach the KVM host's sshd: prepare_mirror,
mirror_status, finish_mirror (then the cold path's swap) and abort_mirror,
and prepare_mirror's refusal of an unproven base.
"""

import os
import uuid

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import blockcopy
from tests.functional.mirror_fixtures import MiB
from tests.functional.mirror_fixtures import guest_write
from tests.functional.mirror_fixtures import kvm_fixture  # noqa: F401
from tests.functional.mirror_fixtures import remote_dir_fixture  # noqa: F401
from tests.functional.mirror_fixtures import running
from tests.functional.mirror_fixtures import server_fixture  # noqa: F401
from tests.functional.mirror_fixtures import sha256
from tests.functional.mirror_fixtures import source_fixture  # noqa: F401
from tests.functional.mirror_fixtures import source_view
from tools.testbed import agent_process
from tools.testbed import harness
from tools.testbed import images
from tools.testbed.process import gone
from tools.testbed.warm_chain import read_back


@pytest.fixture(scope="module")
def mirror_agent(workdir, services, agent_api, instances_path,
                 cloudstack_root, server, remote_dir):
    """An agent process whose ssh key and known_hosts reach the KVM host."""
    agent = agent_process.AgentProcess(
        workdir, host="cs2os-test-%s-mirror" % harness.RUN_ID,
        transport_url=harness.TRANSPORT_URL, exchange=services["exchange"],
        instances_path=instances_path,
        allowed_source_roots=[os.path.join(cloudstack_root, "mnt")],
        transfer_options={"ssh_private_key_file": server.client_key,
                          "ssh_known_hosts_file": server.known_hosts})
    with open(agent.conf_file, "a") as f:
        f.write("\n[mirror]\nrun_dir = %s\nremote_socket_dir = %s\n"
                % (os.path.join(workdir, "agent-mirror"), remote_dir))
    agent.info = agent.start(agent_api, cs2os_context.get_admin_context())
    yield agent
    agent.stop()


def mirror_source(server, src, proof=None):
    return {"transport": "ssh", "host": server.host, "port": server.port,
            "user": "root", "virtual_size": src.virtual_size,
            "socket_owner": blockcopy.qemu_owner(src.dom),
            "base_proof": proof or {"template": src.vol.template,
                                    "template_format": "qcow2"}}


def test_agent_rpc_warm_migration_end_to_end(
        mirror_agent, agent_api, ctxt, server, source, cloudstack_volume,
        nova_instance, workdir):
    assert mirror_agent.info["rpc_api_version"] == "1.6"
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 128 * MiB)
    src = source(vol=vol)
    migration = "mig-warm-%s" % uuid.uuid4().hex
    desc = agent_api.prepare_mirror(ctxt, mirror_agent.host, migration,
                                    inst.uuid, mirror_source(server, src))
    assert desc["base_proof"]["method"] == "compare"
    assert desc["base"] == inst.base
    assert desc["target_path"] == os.path.join(inst.instance_dir,
                                               "disk.cs2os-mirror")
    try:
        job = blockcopy.BlockCopy(src.dom)
        job.start(desc["dest_xml"])
        job.wait_ready(120)
        guest_write(src.dom, "write -P 0x5c 7M 256k")
        status = agent_api.mirror_status(ctxt, mirror_agent.host, migration)
        assert status["state"] == "exporting"
        assert status["qsd_alive"] and status["tunnel_alive"]
        job.cutover()
        result = agent_api.finish_mirror(ctxt, mirror_agent.host, migration,
                                         inst.uuid)
    finally:
        src.dom.destroy()
    staged = os.path.join(inst.instance_dir, "disk.cs2os-staged")
    assert result["staged_path"] == staged
    assert 0 <= result["fsync_seconds"] <= result["closed_seconds"]
    assert result["grown"] is True and result["virtual_size"] == 128 * MiB
    assert result["backing_file"] == inst.base
    assert not os.path.exists(desc["target_path"])
    qemu_img.compare(source_view(src, workdir), staged, "qcow2", "qcow2")
    read_back(staged, "read -P 0x5c 7M 256k")
    # Repeated: the staged result, nothing done twice.
    again = agent_api.finish_mirror(ctxt, mirror_agent.host, migration,
                                    inst.uuid)
    assert again["reused"] is True and again["staged_path"] == staged
    with pytest.raises(mirror_errors.MirrorNotFound):
        agent_api.mirror_status(ctxt, mirror_agent.host, migration)

    # The cold path's swap takes it from here; the guest boots it.
    assert agent_api.swap_disk(ctxt, mirror_agent.host, migration,
                               inst.uuid)["swapped"] is True
    inst.domain.create()
    harness.wait_console(os.path.join(inst.instance_dir, "console.log"),
                         vol.message)


def leftovers(workdir):
    """What the agent's mirror run_dir holds (it is made on first use)."""
    path = os.path.join(workdir, "agent-mirror")
    return os.listdir(path) if os.path.isdir(path) else []


def test_agent_rpc_refuses_an_unproven_base_and_aborts(
        mirror_agent, agent_api, ctxt, server, source, cloudstack_volume,
        nova_instance, workdir):
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 64 * MiB)
    src = source(vol=vol)
    before = images.dir_state(inst.instance_dir)
    migration = "mig-warm-%s" % uuid.uuid4().hex
    wrong = {"algorithm": "guest_sha256", "digest": "0" * 64,
             "virtual_size": 64 * MiB}
    with pytest.raises(mirror_errors.BaseMismatch):
        agent_api.prepare_mirror(ctxt, mirror_agent.host, migration,
                                 inst.uuid, mirror_source(server, src, wrong))
    with pytest.raises(mirror_errors.BaseNotVerified):
        agent_api.prepare_mirror(ctxt, mirror_agent.host, migration,
                                 inst.uuid, dict(mirror_source(server, src),
                                                 base_proof={}))
    assert images.dir_state(inst.instance_dir) == before
    assert not leftovers(workdir)

    # Prepared, then aborted: nothing left, the source untouched.
    overlay_before = sha256(src.vol.overlay)
    desc = agent_api.prepare_mirror(ctxt, mirror_agent.host, migration,
                                    inst.uuid, mirror_source(server, src))
    job = blockcopy.BlockCopy(src.dom)
    job.start(desc["dest_xml"])
    job.wait_ready(120)
    job.cancel()
    assert agent_api.abort_mirror(ctxt, mirror_agent.host, migration,
                                  inst.uuid)["aborted"] is True
    assert agent_api.abort_mirror(ctxt, mirror_agent.host, migration,
                                  inst.uuid)["aborted"] is False
    assert images.dir_state(inst.instance_dir) == before
    assert not leftovers(workdir)
    assert running(src.dom)
    assert sha256(src.vol.overlay) == overlay_before
    for pid in (desc["qsd_pid"], desc["tunnel_pid"]):
        harness.wait_for(lambda p=pid: gone(p), 10, "pid %d to end" % pid)
