"""The mirror's target side, for real: abort, failures and refusals.

On the testbed of tests/functional/mirror_fixtures.py: an abort before the
cutover, the storage daemon or the tunnel killed mid-mirror (the source
never notices, a retry succeeds), a base that differs from the template,
and the tunnel refused by the KVM host's sshd.
"""

import dataclasses
import os
import signal

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.agent.mirror import baseproof
from cs2os_agent.agent.mirror import tunnel
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import blockcopy
from tests.functional.mirror_fixtures import RUNNING
from tests.functional.mirror_fixtures import MiB
from tests.functional.mirror_fixtures import assert_cleaned
from tests.functional.mirror_fixtures import endpoint_fixture  # noqa: F401
from tests.functional.mirror_fixtures import guest_write
from tests.functional.mirror_fixtures import kvm_fixture  # noqa: F401
from tests.functional.mirror_fixtures import make_target_fixture  # noqa: F401
from tests.functional.mirror_fixtures import remote_dir_fixture  # noqa: F401
from tests.functional.mirror_fixtures import run_root_fixture  # noqa: F401
from tests.functional.mirror_fixtures import server_fixture  # noqa: F401
from tests.functional.mirror_fixtures import sha256
from tests.functional.mirror_fixtures import source_fixture  # noqa: F401
from tests.functional.mirror_fixtures import source_view
from tests.functional.mirror_fixtures import ssh_options_fixture  # noqa: F401
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import sshd
from tools.testbed.process import gone
from tools.testbed.warm_chain import read_back

# -- abort and failures: the source never notices ----------------------------


def test_abort_before_cutover_leaves_source_untouched(source, make_target,
                                                      workdir):
    src = source()
    before = sha256(src.vol.overlay)
    target = make_target(src)
    desc = target.prepare()
    job = blockcopy.BlockCopy(src.dom)
    job.start(desc["dest_xml"])
    job.wait_ready(120)

    job.cancel()
    target.abort()
    assert src.dom.state()[0] == RUNNING
    assert not job.status().active
    assert sha256(src.vol.overlay) == before
    assert_cleaned(target, desc)
    # The guest goes on writing to its own disk.
    guest_write(src.dom, "write -P 0x77 3M 64k")
    view = source_view(src, workdir)
    read_back(view, "read -P 0x77 3M 64k")
    os.unlink(view)
    # A second abort is harmless.
    target.abort()


def _expect_job_failure(job, timeout=30):
    def failed():
        try:
            job.check()
        except mirror_errors.BlockCopyFailed:
            return True
        return False

    harness.wait_for(failed, timeout, "the block job to fail")
    with pytest.raises(mirror_errors.BlockCopyFailed) as err:
        job.check()
    return str(err.value)


def _retry_and_compare(src, make_target, migration_id, workdir):
    target = make_target(src, migration_id)
    desc = target.prepare()
    job = blockcopy.BlockCopy(src.dom)
    job.start(desc["dest_xml"])
    job.wait_ready(120)
    guest_write(src.dom, "write -P 0x66 5M 128k")
    job.cutover()
    target.finish()
    src.dom.destroy()
    qemu_img.compare(source_view(src, workdir), target.target_path,
                     "qcow2", "qcow2")
    read_back(target.target_path, "read -P 0x66 5M 128k")
    os.unlink(target.target_path)


def test_storage_daemon_killed_mid_mirror(source, make_target, workdir):
    src = source()
    target = make_target(src)
    desc = target.prepare()
    job = blockcopy.BlockCopy(src.dom)
    job.start(desc["dest_xml"])
    job.wait_ready(120)

    os.kill(desc["qsd_pid"], signal.SIGKILL)
    # The next guest write finds the target gone: the job fails, the guest
    # write itself succeeds on the source.
    guest_write(src.dom, "write -P 0x42 2M 64k")
    msg = _expect_job_failure(job)
    assert "source domain is running" in msg
    assert src.dom.state()[0] == RUNNING
    status = target.status()
    assert status["state"] == "failed" and not status["qsd_alive"]
    assert "killed by SIGKILL" in status["error"]
    # T is not durable: finishing it is refused, with the reason.
    with pytest.raises(mirror_errors.StorageDaemonDied):
        target.finish()
    target.abort()
    assert_cleaned(target, desc)

    _retry_and_compare(src, make_target, target.migration_id, workdir)


def test_tunnel_killed_mid_copy(source, make_target, workdir):
    src = source(writes=((0xB1, 4 * MiB, 24 * MiB),))
    target = make_target(src)
    desc = target.prepare()
    job = blockcopy.BlockCopy(src.dom)
    # 2 MiB/s: the bulk phase lasts ~12 s, long enough to cut it.
    job.start(desc["dest_xml"], bandwidth=2 * MiB)
    harness.wait_for(lambda: job.check().cur > 0, 30, "the copy to start")
    assert not job.check().ready

    os.kill(desc["tunnel_pid"], signal.SIGKILL)
    msg = _expect_job_failure(job)
    assert "source domain is running" in msg
    assert src.dom.state()[0] == RUNNING
    status = target.status()
    assert status["state"] == "failed" and not status["tunnel_alive"]
    assert status["qsd_alive"]
    target.abort()
    assert_cleaned(target, desc)

    _retry_and_compare(src, make_target, target.migration_id, workdir)


# -- refusals -----------------------------------------------------------------


def test_base_differing_from_template_refused(source, cloudstack_volume,
                                              instances_path):
    vol = cloudstack_volume()
    nova = images.make_nova_instance(instances_path, vol.template, 64 * MiB,
                                     "cs2os-test-%s" % harness.RUN_ID)
    proof = {"template": vol.template, "template_format": "qcow2"}
    baseproof.prove(nova.base, "raw", proof)
    digest = baseproof.guest_digest(nova.base, "raw")
    # One byte of D changed: B and D no longer match.
    images.run("qemu-io", "-f", "raw", "-c", "write -P 0x99 20M 1",
               nova.base)
    with pytest.raises(mirror_errors.BaseMismatch) as err:
        baseproof.prove(nova.base, "raw", proof)
    assert "mismatch" in str(err.value).lower()
    with pytest.raises(mirror_errors.BaseMismatch):
        baseproof.prove(nova.base, "raw", {
            "algorithm": "guest_sha256", "digest": digest,
            "virtual_size": 64 * MiB})
    with pytest.raises(mirror_errors.BaseNotVerified):
        baseproof.prove(nova.base, "raw", {})


def test_tunnel_refusals(server, ssh_options, remote_dir, run_root, workdir):
    # A stand-in for the export: any unix socket of ours.
    local = os.path.join(run_root, "refusal.sock")
    endpoint = tunnel.Endpoint(server.host, server.port, "root")

    # Unknown host key: refused with the ssh transport's words.
    unknown = dataclasses.replace(ssh_options,
                                  known_hosts_file=server.other_known_hosts)
    t = tunnel.ReverseTunnel(endpoint, unknown, local,
                             tunnel.remote_socket_path(remote_dir),
                             log_file=os.path.join(run_root, "t1.log"))
    with pytest.raises(exception.SourceHostKeyUnknown):
        t.start()
    assert gone(t.pid)

    # An sshd that forbids forwarding (the shared test server's config).
    with sshd.Server(workdir) as plain:
        opts = dataclasses.replace(ssh_options,
                                   private_key_file=plain.client_key,
                                   known_hosts_file=plain.known_hosts)
        remote = tunnel.remote_socket_path(remote_dir)
        t = tunnel.ReverseTunnel(
            tunnel.Endpoint(plain.host, plain.port, "root"), opts, local,
            remote, log_file=os.path.join(run_root, "t2.log"))
        with pytest.raises(mirror_errors.MirrorTunnelFailed) as err:
            t.start()
        assert "AllowTcpForwarding" in str(err.value)
        assert not os.path.exists(remote)
        assert gone(t.pid)
