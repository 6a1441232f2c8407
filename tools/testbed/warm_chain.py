"""What a warm migration needs beyond the cold chain, for tests and bench.

- The CloudStack KVM host's sshd: the stand-in's KVM host is this machine
  (127.0.0.1), so a private sshd on 127.0.0.1 that allows remote
  forwarding (sshd.ForwardingServer) plays its sshd.  The agent's mirror
  tunnel logs in to it, and so does the conductor's libvirt connection
  (qemu+ssh through cs2os-kvm-ssh, host key checked against the sshd's
  known_hosts), which
  reaches this machine's libvirtd: the one running the stand-in's VMs.
- The agent's config: that sshd's client key and known_hosts, a [mirror]
  run_dir, and a socket directory on the "KVM host" the source QEMU
  (libvirt-qemu) can reach.
- The conductor's config: the cold one plus the KVM host's libvirt URI and
  sshd port.

Used by the end-to-end tests and the fault suite (as fixtures, in
tests/e2e/conftest.py and tests/faults/conftest.py) and by
tools/bench_mirror.py.
"""

import os
import shutil
import subprocess
import tempfile

import libvirt
import libvirt_qemu

from tools.testbed import agent_process
from tools.testbed import conductor_process
from tools.testbed import images
from tools.testbed.sshd import ForwardingServer

# virtio-disk0's block backend in a libvirt domain's QOM tree: HMP
# qemu-io writes through the guest's own device (recipes/live-mirror).
QDEV = "/machine/peripheral/virtio-disk0/virtio-backend"


def start_kvm_sshd(workdir):
    return ForwardingServer(workdir).start()


def make_remote_dir(run_id):
    """The KVM host's tunnel socket directory, traversable by QEMU's user
    (as /tmp is on a real host); the caller removes it."""
    path = tempfile.mkdtemp(prefix="cs2os-%s-" % run_id, dir="/tmp")
    os.chmod(path, 0o755)  # noqa: S103 - QEMU's user must reach it
    return path


def libvirt_uri(sshd):
    """[cloudstack] kvm_libvirt_uri for the stand-in's KVM host."""
    return ("qemu+ssh://root@{host}:%d/system?keyfile=%s&known_hosts=%s"
            % (sshd.port, sshd.client_key, sshd.known_hosts))


def make_agent(workdir, host, transport_url, exchange, instances_path,
               cloudstack_root, sshd, remote_dir, run_dir):
    agent = agent_process.AgentProcess(
        workdir, host, transport_url, exchange, instances_path,
        [os.path.join(cloudstack_root, "mnt")],
        transfer_options={"ssh_private_key_file": sshd.client_key,
                          "ssh_known_hosts_file": sshd.known_hosts})
    with open(agent.conf_file, "a") as f:
        f.write("\n[mirror]\nrun_dir = %s\nremote_socket_dir = %s\n"
                % (run_dir, remote_dir))
    return agent


def make_conductor(workdir, name, transport_url, exchange, cloud,
                   openstack_auth, cloudstack_root, sshd, **conductor):
    """A ConductorProcess (not started) on its own database."""
    spool = os.path.join(workdir, "spool-" + name)
    os.makedirs(spool, exist_ok=True)
    options = {"overlay_transport": "path",
               "primary_storage_mount": os.path.join(cloudstack_root, "mnt"),
               "image_spool_dir": spool,
               "mirror_poll_interval": 0.2}
    options.update(conductor)
    return conductor_process.ConductorProcess(
        workdir, "cs2os-e2e-%s-conductor" % name, transport_url, exchange,
        "sqlite:///%s" % os.path.join(workdir, "e2e-%s.sqlite" % name),
        "notifications-e2e-%s" % name,
        sections={
            "cloudstack": {"endpoint": cloud.endpoint,
                           "api_key": cloud.admin.apikey,
                           "secret_key": cloud.admin.secretkey,
                           "job_poll_interval": 0.2,
                           "kvm_libvirt_uri": libvirt_uri(sshd),
                           "kvm_ssh_port": sshd.port,
                           # Every owner into the conductor's own project.
                           "project_map": "*:%s"
                           % openstack_auth["project_name"]},
            "openstack": openstack_auth,
            "conductor": options,
            "agent": {"allowed_source_roots":
                      os.path.join(cloudstack_root, "mnt")},
        })


def remove_dir(path):
    shutil.rmtree(path, ignore_errors=True)


# -- the running source, seen from its KVM host -------------------------------


def guest_write(dom, spec):
    """A write by the running guest's own disk device (HMP qemu-io).

    It answers nothing on success (its report goes to QEMU's stdout); an
    error comes back as text.
    """
    out = libvirt_qemu.qemuMonitorCommand(
        dom, 'qemu-io -d %s "%s"' % (QDEV, spec),
        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    if out.strip():
        raise AssertionError("qemu-io %r: %s" % (spec, out))


def running(dom):
    try:
        return dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False  # a transient domain that ended is gone


def source_view(volume, dest):
    """A's chain as the guest sees it: a copy of A rebased onto local B.

    Only for a source that no longer runs (QEMU caches qcow2 metadata).
    """
    shutil.copyfile(volume.overlay, dest)
    images.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b",
               volume.template, "-F", "qcow2", dest)
    return dest


def read_back(path, *specs):
    """Every ``read -P`` of ``specs`` must find its pattern in ``path``."""
    argv = ["qemu-io", "-r", "-U", "-f", "qcow2"]
    for spec in specs:
        argv += ["-c", spec]
    out = subprocess.run(argv + [path], capture_output=True, text=True,
                         check=True).stdout
    if "Pattern verification failed" in out or \
            out.count("read ") != len(specs):
        raise AssertionError(out)
