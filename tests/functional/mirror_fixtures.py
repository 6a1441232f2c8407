"""The warm-mirror tests' testbed, shared by tests/functional/test_mirror_*.py.

A CloudStack-like source (template B, overlay A naming B by its KVM-host
path) runs as a real transient KVM domain (tools/testbed/cloudstack_kvm); a
Nova-like base D is made from B.  The mirror target T (fresh qcow2 on D) is
exported by a real qemu-storage-daemon; the source reaches it through a
real ``ssh -R`` tunnel into a private sshd on 127.0.0.1 that plays the KVM
host (it runs on this machine, so its sockets are where the source QEMU
can open them); libvirt's block copy moves A into T while the guest keeps
running and guest writes are injected (HMP ``qemu-io``).

Every name carries harness.RUN_ID; domains, daemons, tunnels, sockets and
files are removed by the test that made them.  A test module takes a
fixture below by importing ``<name>_fixture``, with every fixture of this
module that one needs; a module-scoped one starts once per test module.
"""

import dataclasses
import os
import shutil
import tempfile
import uuid

import libvirt
import libvirt_qemu
import pytest

from cs2os_agent.agent.mirror import target as mirror_target
from cs2os_agent.agent.mirror import tunnel
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.transfer import sshcmd
from tools.testbed import cloudstack_kvm
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import sshd
from tools.testbed.process import gone

MiB = images.MiB
# Where virtio-disk0's block backend sits in the QOM tree of a libvirt
# domain: HMP qemu-io writes through the guest's own device (recipe).
QDEV = "/machine/peripheral/virtio-disk0/virtio-backend"
RUNNING = libvirt.VIR_DOMAIN_RUNNING


# -- the KVM host (its sshd, its libvirt), the agent's run directory ---------


@pytest.fixture(scope="module", name="server")
def server_fixture(workdir):
    try:
        srv = sshd.ForwardingServer(workdir).start()
    except sshd.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module", name="ssh_options")
def ssh_options_fixture(server):
    return sshcmd.SshOptions(private_key_file=server.client_key,
                             known_hosts_file=server.known_hosts,
                             connect_timeout=10, stall_timeout=20,
                             chunk_size=MiB)


@pytest.fixture(scope="module", name="endpoint")
def endpoint_fixture(server):
    return tunnel.Endpoint(host=server.host, port=server.port, user="root")


@pytest.fixture(scope="module", name="run_root")
def run_root_fixture(workdir):
    path = os.path.join(workdir, "mirror")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@pytest.fixture(scope="module", name="remote_dir")
def remote_dir_fixture():
    """The KVM host's directory for tunnel sockets (here: this machine).

    Traversable by the source QEMU's user, as /tmp is on a real host.
    """
    path = tempfile.mkdtemp(prefix="cs2os-%s-" % harness.RUN_ID, dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", name="kvm")
def kvm_fixture(services, cloudstack_root):
    host = cloudstack_kvm.LibvirtKVM(cloudstack_root, harness.LIBVIRT_URI)
    yield host
    host.cleanup()


# -- a source VM and its target ----------------------------------------------


@dataclasses.dataclass
class Source:
    vol: images.CloudStackVolume
    nova: images.NovaInstance
    name: str
    dom: object
    virtual_size: int


@pytest.fixture(name="source")
def source_fixture(kvm, cloudstack_volume, instances_path, libvirt_conn):
    """Factory: a running CloudStack VM on a fresh volume, and Nova's D."""
    made = []

    def make(template_size=64 * MiB, writes=None, vol=None):
        kwargs = {"template_size": template_size}
        if writes is not None:
            kwargs["writes"] = writes
        vol = vol or cloudstack_volume(**kwargs)
        nova = images.make_nova_instance(
            instances_path, vol.template, 2 * template_size,
            "cs2os-test-%s" % harness.RUN_ID)
        name = "i-2-%d-cs2os-%s" % (len(made) + 1, harness.RUN_ID)
        root = os.path.dirname(os.path.dirname(vol.pool_dir))
        spec = cloudstack_kvm.DomainSpec(
            name=name, uuid=str(uuid.uuid4()), memory_mib=64, vcpus=1,
            disk="/" + os.path.relpath(vol.overlay, root),
            serial=uuid.uuid4().hex[:20])
        kvm.start(spec)
        made.append(name)
        dom = libvirt_conn.lookupByName(name)
        return Source(vol, nova, name, dom, template_size)

    yield make
    for name in made:
        kvm.stop(name, forced=True)


def guest_write(dom, spec):
    """A write by the running guest's own disk device (recipe mplib).

    HMP qemu-io answers nothing on success here (its report goes to QEMU's
    stdout); an error comes back as text.  Tests read the pattern back.
    """
    out = libvirt_qemu.qemuMonitorCommand(
        dom, 'qemu-io -d %s "%s"' % (QDEV, spec),
        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    assert not out.strip(), out


def source_view(src, workdir):
    """A's chain as the guest sees it: a copy of A rebased onto local B."""
    if running(src.dom):
        # QEMU caches qcow2 metadata: have it written before copying A.
        guest_write(src.dom, "flush")
    ref = os.path.join(workdir, "view-%s.qcow2" % uuid.uuid4().hex)
    shutil.copyfile(src.vol.overlay, ref)
    images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b",
               src.vol.template, "-F", "qcow2", ref)
    return ref


def running(dom):
    """A transient domain that was destroyed is gone from libvirt."""
    try:
        return dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False


def sha256(path):
    return images.sha256(path)


@pytest.fixture(name="make_target")
def make_target_fixture(run_root, endpoint, ssh_options, remote_dir):
    """Factory: a MirrorTarget for a source; aborted after the test."""
    made = []

    def make(src, migration_id=None):
        target = mirror_target.MirrorTarget(
            migration_id or "mig-%s-%s" % (harness.RUN_ID,
                                           uuid.uuid4().hex[:8]),
            src.nova.instance_dir, src.nova.base, "raw", src.virtual_size,
            run_root, endpoint=endpoint, ssh_options=ssh_options,
            remote_socket_dir=remote_dir,
            socket_owner=blockcopy.qemu_owner(src.dom))
        made.append(target)
        return target

    yield make
    for target in made:
        # Stops its daemon and tunnel (by PID) if a test failed midway.
        target.abort()


def assert_cleaned(target, desc):
    assert not os.path.exists(target.target_path)
    assert not os.path.exists(target.run_dir)
    harness.wait_for(lambda: not os.path.exists(desc["nbd"]["socket"]), 10,
                     "the tunnel's remote socket to go")
    for pid in (desc["qsd_pid"], desc["tunnel_pid"]):
        harness.wait_for(lambda p=pid: gone(p), 10, "pid %d to end" % pid)
