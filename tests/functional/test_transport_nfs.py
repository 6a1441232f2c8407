"""The agent pulls a CloudStack overlay over NFS, in user space, for real.

A real nfs-ganesha exports a CloudStack-like primary storage directory
(tools/testbed/nfsd.py): NFSv4 on 127.0.0.1 and a free port, and
NFSv3 + v4 inside a private network namespace with its own rpcbind.  The
agent runs as its own process over RabbitMQ and reads with libnfs, never
through a kernel mount.
"""

import os
import uuid

import oslo_messaging as messaging
import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from cs2os_agent.transfer import nfs
from tests.functional import test_agent_migration as migration_tests
from tests.functional import test_transport_ranges as ranges_checks
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import nfsd
from tools.testbed import process

MiB = images.MiB
PSEUDO = "/primary"


@pytest.fixture(scope="module")
def nfs_root(workdir):
    """CloudStack's primary storage: <root>/mnt/<pool>/<volume>."""
    root = os.path.join(workdir, "nfs-primary")
    os.makedirs(os.path.join(root, "mnt"), mode=0o755)
    return root


@pytest.fixture(scope="module")
def ganesha4(workdir, nfs_root):
    nfsd.require("ganesha.nfsd")
    server = nfsd.Ganesha(workdir, "ganesha-v4", os.path.join(nfs_root, "mnt"),
                          pseudo=PSEUDO, protocols="4")
    try:
        yield server.start("127.0.0.1", 4)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ganesha3(workdir, nfs_root):
    """NFSv3 (+v4) on the standard ports, inside a private namespace."""
    nfsd.require("ganesha.nfsd", "rpcbind", "ip", "unshare", "nsenter")
    net = nfsd.PrivateNetwork(workdir, harness.RUN_ID)
    server = None
    try:
        net.start()
        server = nfsd.Ganesha(
            workdir, "ganesha-v3", os.path.join(nfs_root, "mnt"),
            pseudo=PSEUDO, bind="0.0.0.0", nfs_port=2049,
            protocols="3, 4", prefix=net.nsenter())
        server.start(net.ns_ip, 3)
        server.address = net.ns_ip
        yield server
    finally:
        if server is not None:
            server.stop()
        net.stop()


@pytest.fixture(scope="module")
def nfs_agent(agents, ganesha4):
    return agents.start("nfs", transfer_options={"nfs_port": ganesha4.port})


@pytest.fixture
def volume(nfs_root):
    def make(**kwargs):
        return images.make_cloudstack_volume(nfs_root, **kwargs)

    return make


def nfs_source(vol, server="127.0.0.1", version=None):
    """The source dict the conductor sends: path relative to the export."""
    source = {
        "transport": "nfs",
        "server": server,
        "export": PSEUDO,
        "path": os.path.relpath(vol.overlay, os.path.dirname(vol.pool_dir)),
    }
    if version is not None:
        source["version"] = version
    return source


def test_cold_migration_over_nfsv4_end_to_end(
        nfs_agent, agent_api, ctxt, volume, nova_instance, conductor_stub):
    vol = volume()
    inst = nova_instance(vol.template, 128 * MiB, start=True)
    harness.wait_console(migration_tests.console(inst), vol.template_message)
    migration = "mig-nfs4-%s" % uuid.uuid4().hex
    result = agent_api.sync_overlay(ctxt, nfs_agent.host, migration,
                                    inst.uuid, nfs_source(vol))
    staged = os.path.join(inst.instance_dir, "disk.cs2os-staged")
    assert result["staged_path"] == staged
    assert result["source"]["transport"] == "nfs"
    assert result["source"]["size"] == os.path.getsize(vol.overlay)
    assert result["source"]["fileid"] == os.stat(vol.overlay).st_ino
    # The overlay file and nothing else crossed the wire: not the template.
    assert result["bytes_copied"] == os.path.getsize(vol.overlay)
    assert vol.written <= result["bytes_copied"]
    assert result["backing_file"] == inst.base
    assert result["resumed_at"] == 0
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")
    reports = [p for m, p in conductor_stub.reports if m == migration]
    assert reports and reports[-1]["bytes_done"] == reports[-1][
        "bytes_total"] == result["bytes_copied"]
    # auto tries NFSv4 first; this server speaks nothing else.
    assert "(NFSv4)" in nfs_agent.log()

    inst.domain.destroy()  # Nova's stop
    assert agent_api.swap_disk(ctxt, nfs_agent.host, migration,
                               inst.uuid)["swapped"] is True
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2")
    inst.domain.create()  # Nova's start
    harness.wait_console(migration_tests.console(inst), vol.message)
    qemu_img.compare(vol.reference, inst.disk, "qcow2", "qcow2",
                     force_share=True)


def test_nfsv3_from_a_private_network_namespace(
        agents, agent_api, ctxt, ganesha3, volume, nova_instance):
    # Standard ports: NFS and MOUNT are found through the portmapper.
    agent = agents.start("nfs3", transfer_options={"nfs_version": "3"})
    vol = volume()
    inst = nova_instance(vol.template, 64 * MiB)
    result = agent_api.sync_overlay(
        ctxt, agent.host, "mig-nfs3", inst.uuid,
        nfs_source(vol, server=ganesha3.address))
    assert result["bytes_copied"] == os.path.getsize(vol.overlay)
    qemu_img.compare(vol.reference, result["staged_path"], "qcow2", "qcow2")
    assert "(NFSv3)" in agent.log()
    # The same server over NFSv4, asked for by the request.
    inst4 = nova_instance(vol.template, 64 * MiB)
    result4 = agent_api.sync_overlay(
        ctxt, agent.host, "mig-nfs3-v4", inst4.uuid,
        nfs_source(vol, server=ganesha3.address, version="4"))
    assert result4["source"] == result["source"]
    qemu_img.compare(vol.reference, result4["staged_path"], "qcow2",
                     "qcow2")
    # NFSv3 answers an unknown export with MNT3ERR_ACCES.
    with pytest.raises(exception.NfsExportUnavailable) as err:
        agent_api.sync_overlay(
            ctxt, agent.host, "mig-nfs3-noexport", inst.uuid,
            dict(nfs_source(vol, server=ganesha3.address),
                 export="/no-such-export"))
    assert "NFSv3" in str(err.value)


def test_missing_file(nfs_agent, agent_api, ctxt, volume, nova_instance):
    vol = volume()
    inst = nova_instance(vol.template, 64 * MiB)
    source = dict(nfs_source(vol), path="no-such-pool/no-such-volume")
    with pytest.raises(exception.SourceNotFound) as err:
        agent_api.sync_overlay(ctxt, nfs_agent.host, "mig-nfs-nofile",
                               inst.uuid, source)
    assert "no-such-volume" in str(err.value)
    assert sorted(os.listdir(inst.instance_dir)) == ["disk", "disk.info"]


def test_export_not_found(nfs_agent, agent_api, ctxt, volume, nova_instance):
    vol = volume()
    inst = nova_instance(vol.template, 64 * MiB)
    with pytest.raises(exception.NfsExportUnavailable) as err:
        agent_api.sync_overlay(
            ctxt, nfs_agent.host, "mig-nfs-noexport", inst.uuid,
            dict(nfs_source(vol), export="/no-such-export"))
    assert "/no-such-export" in str(err.value)


def test_path_cannot_leave_the_export(nfs_agent, agent_api, ctxt, volume,
                                      nova_instance):
    vol = volume()
    inst = nova_instance(vol.template, 64 * MiB)
    with pytest.raises(exception.InvalidSource) as err:
        agent_api.sync_overlay(
            ctxt, nfs_agent.host, "mig-nfs-escape", inst.uuid,
            dict(nfs_source(vol), path="../nfs-primary/mnt"))
    assert "'..'" in str(err.value)


def test_unreachable_server(agents, agent_api, ctxt, volume, nova_instance):
    closed = process.free_port()  # nothing listens there
    agent = agents.start("nfs-closed", transfer_options={"nfs_port": closed})
    vol = volume()
    inst = nova_instance(vol.template, 64 * MiB)
    with pytest.raises(exception.SourceUnreachable) as err:
        agent_api.sync_overlay(ctxt, agent.host, "mig-nfs-closed",
                               inst.uuid, nfs_source(vol, version="4"))
    assert isinstance(err.value, exception.NfsServerUnreachable)
    assert str(closed) in str(err.value)


def test_permission_denied(agents, agent_api, ctxt, ganesha4, volume,
                           nova_instance):
    # The export does not squash root, so the file's mode decides.
    agent = agents.start("nfs-nobody", transfer_options={
        "nfs_port": ganesha4.port, "nfs_uid": 65534, "nfs_gid": 65534})
    vol = volume()
    os.chmod(vol.overlay, 0o600)
    inst = nova_instance(vol.template, 64 * MiB)
    with pytest.raises(exception.SourceUnreadable) as err:
        agent_api.sync_overlay(ctxt, agent.host, "mig-nfs-denied",
                               inst.uuid, nfs_source(vol))
    assert "NFS4ERR_ACCESS" in str(err.value)


@pytest.fixture(scope="module")
def slow_nfs_agent(agents, ganesha4):
    return agents.start("nfs-slow", max_bandwidth_mbps=40,  # 5 MB/s
                        transfer_options={"nfs_port": ganesha4.port})


def test_cancel_mid_copy(slow_nfs_agent, agent_api, ctxt, volume,
                         nova_instance):
    vol = volume(writes=((0x5A, 4 * MiB, 40 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    before = images.dir_state(inst.instance_dir)
    migration = "mig-nfs-cancel-%s" % uuid.uuid4().hex
    part = os.path.join(inst.instance_dir, "disk.cs2os-staged.part")
    call = harness.Call(agent_api.sync_overlay, ctxt,
                              slow_nfs_agent.host, migration, inst.uuid,
                              nfs_source(vol))
    call.start()
    harness.wait_for(
        lambda: os.path.exists(part) and os.path.getsize(part) > 0,
        what="the copy to start")
    assert agent_api.cancel(ctxt, slow_nfs_agent.host, migration)[
        "cancelled"] is True
    call.join(30)
    assert isinstance(call.error, exception.MigrationCancelled), call.error
    assert images.dir_state(inst.instance_dir) == before


def test_agent_killed_mid_copy_resumes(agents, agent_api, ctxt, ganesha4,
                                       volume, nova_instance):
    # Several connections read at once and finish blocks out of order:
    # the checkpoint must still only cover bytes that are all there.
    victim = agents.start("nfs-victim", max_bandwidth_mbps=40,
                          transfer_options={"nfs_port": ganesha4.port,
                                            "nfs_connections": 4})
    vol = volume(writes=((0x5A, 4 * MiB, 30 * MiB),))
    inst = nova_instance(vol.template, 64 * MiB)
    migration = "mig-nfs-kill-%s" % uuid.uuid4().hex
    source = nfs_source(vol)
    part = os.path.join(inst.instance_dir, "disk.cs2os-staged.part")
    staged = os.path.join(inst.instance_dir, "disk.cs2os-staged")
    call = harness.Call(agent_api.sync_overlay, ctxt, victim.host,
                              migration, inst.uuid, source)
    call.start()
    # Kill only once a checkpoint is recorded (every 4 MiB in tests).
    harness.wait_for(lambda: harness.durable_offset(part) > 0,
                     what="a checkpointed partial copy")
    victim.kill()  # SIGKILL: no cleanup of any kind runs
    call.join(60)
    assert isinstance(call.error, messaging.MessagingTimeout), call.error
    assert os.path.exists(part) and not os.path.exists(staged)
    killed_at = os.path.getsize(part)

    victim.start(agent_api, ctxt)
    result = agent_api.sync_overlay(ctxt, victim.host, migration, inst.uuid,
                                    source)
    # Resumed at a durable checkpoint, read only the rest over NFS.
    assert 0 < result["resumed_at"] <= killed_at
    assert "reading on fewer" not in victim.log()
    assert result["bytes_copied"] == os.path.getsize(vol.overlay) - result[
        "resumed_at"]
    assert not os.path.exists(part)
    qemu_img.compare(vol.reference, staged, "qcow2", "qcow2")


def test_two_nfsv4_copies_at_once_in_one_agent(slow_nfs_agent, agent_api,
                                               ctxt, volume, nova_instance):
    # Each copy is its own NFSv4 client: with libnfs's default client name
    # the second SETCLIENTID expired the first copy's open file.
    vols = [volume(writes=((0x5A + i, 4 * MiB, 12 * MiB),)) for i in (0, 1)]
    insts = [nova_instance(v.template, 64 * MiB) for v in vols]
    calls = [
        harness.Call(agent_api.sync_overlay, ctxt, slow_nfs_agent.host,
                           "mig-nfs-pair-%d" % i, inst.uuid, nfs_source(vol))
        for i, (vol, inst) in enumerate(zip(vols, insts, strict=True))
    ]
    for call in calls:
        call.start()
    for call in calls:
        call.join(60)
    for call, vol in zip(calls, vols, strict=True):
        assert call.error is None, call.error
        # 5 MB/s each: the two copies overlapped for seconds.
        assert call.result["seconds"] > 2
        qemu_img.compare(vol.reference, call.result["staged_path"], "qcow2",
                         "qcow2")


# -- ranged reads and copies around skipped ranges, in this process -----------


@pytest.fixture(scope="module")
def ranges_file(nfs_root):
    directory = os.path.join(nfs_root, "mnt", "ranges-pool")
    return ranges_checks.make_file(directory)


def in_process_source(ganesha4, connections=1):
    """The transport itself, on the real libnfs, path below the export."""
    return nfs.NfsSource("127.0.0.1", PSEUDO, "/ranges-pool/overlay", (4,),
                         30, MiB, nfs_port=ganesha4.port,
                         connections=connections)


def test_read_ranges_over_nfs(ganesha4, ranges_file):
    _, data = ranges_file
    with in_process_source(ganesha4) as src:
        ranges_checks.check_ranged_reads(src, data, count=5000)


@pytest.mark.parametrize("connections", [1, 3])
def test_copy_around_skipped_ranges_over_nfs(ganesha4, ranges_file, workdir,
                                             connections):
    _, data = ranges_file
    ranges_checks.check_skipping_copies(
        lambda: in_process_source(ganesha4, connections), data, workdir,
        "nfs-%d" % connections)
