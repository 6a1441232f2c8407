"""The warm-migration building blocks, for real.

A CloudStack-like source (template B, overlay A naming B by its KVM-host
path) runs as a real transient KVM domain (tools/testbed/cloudstack_kvm); a
Nova-like base D is made from B.  The mirror target T (fresh qcow2 on D) is
exported by a real qemu-storage-daemon; the source reaches it through a
real ``ssh -R`` tunnel into a private sshd on 127.0.0.1 that plays the KVM
host (it runs on this machine, so its sockets are where the source QEMU
can open them); libvirt's block copy moves A into T while the guest keeps
running and guest writes are injected (HMP ``qemu-io``).  After the
cutover (suspend, end the job, close T) ``qemu-img compare`` of the source
chain and T must find them identical.

Every name carries harness.RUN_ID; domains, daemons, tunnels, sockets and
files are removed by the test that made them.
"""

import ctypes
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import libvirt
import libvirt_qemu
import pytest

from cs2os_agent import qemu_img
from cs2os_agent import virt
from cs2os_agent.agent.mirror import baseproof
from cs2os_agent.agent.mirror import qsd
from cs2os_agent.agent.mirror import target as mirror_target
from cs2os_agent.agent.mirror import tunnel
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import sourceend
from cs2os_agent.transfer import sshcmd
from tools.testbed import agent_process
from tools.testbed import cloudstack_kvm
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import sshd
from tools.testbed.warm_chain import read_back

MiB = images.MiB
# Where virtio-disk0's block backend sits in the QOM tree of a libvirt
# domain: HMP qemu-io writes through the guest's own device (recipe).
QDEV = "/machine/peripheral/virtio-disk0/virtio-backend"


@pytest.fixture(scope="module")
def server(workdir):
    try:
        srv = sshd.ForwardingServer(workdir).start()
    except sshd.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ssh_options(server):
    return sshcmd.SshOptions(private_key_file=server.client_key,
                             known_hosts_file=server.known_hosts,
                             connect_timeout=10, stall_timeout=20,
                             chunk_size=MiB)


@pytest.fixture(scope="module")
def endpoint(server):
    return tunnel.Endpoint(host=server.host, port=server.port, user="root")


@pytest.fixture(scope="module")
def run_root(workdir):
    path = os.path.join(workdir, "mirror")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def remote_dir():
    """The KVM host's directory for tunnel sockets (here: this machine).

    Traversable by the source QEMU's user, as /tmp is on a real host.
    """
    path = tempfile.mkdtemp(prefix="cs2os-%s-" % harness.RUN_ID, dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def kvm(services, cloudstack_root):
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


@pytest.fixture
def source(kvm, cloudstack_volume, instances_path, libvirt_conn):
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


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "nr_cache", "nr_dirty", "nr_writeback", "nr_evicted",
        "nr_recently_evicted")]


_SYS_CACHESTAT = 451  # x86_64, Linux >= 6.5


def page_cache_state(path):
    """(cached, dirty, under write-back) pages of ``path``: cachestat(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    stat = _Cachestat()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(_SYS_CACHESTAT, fd,
                        ctypes.byref(_CachestatRange(0, 0)),
                        ctypes.byref(stat), 0) != 0:
            raise OSError(ctypes.get_errno(), "cachestat %s" % path)
    finally:
        os.close(fd)
    return stat.nr_cache, stat.nr_dirty, stat.nr_writeback


def open_flags(pid, path):
    """The open(2) flags with which process ``pid`` holds ``path``."""
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != path:
                continue
        except FileNotFoundError:
            continue  # closed meanwhile
        with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
            for line in f:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8)
    raise AssertionError("process %d does not hold %s open" % (pid, path))


def minor_faults(pid):
    """Page faults ``pid`` took so far that needed no disk (minflt)."""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


@pytest.fixture
def make_target(run_root, endpoint, ssh_options, remote_dir):
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


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Our child that ended but was not reaped yet counts as gone too.
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def assert_cleaned(target, desc):
    assert not os.path.exists(target.target_path)
    assert not os.path.exists(target.run_dir)
    harness.wait_for(lambda: not os.path.exists(desc["nbd"]["socket"]), 10,
                     "the tunnel's remote socket to go")
    for pid in (desc["qsd_pid"], desc["tunnel_pid"]):
        harness.wait_for(lambda p=pid: gone(p), 10, "pid %d to end" % pid)


RUNNING = libvirt.VIR_DOMAIN_RUNNING


# -- it works -----------------------------------------------------------------


@pytest.mark.parametrize("t_io", ["direct", "buffered"])
def test_warm_mirror_through_tunnel_with_guest_writes(
        source, make_target, endpoint, ssh_options, remote_dir, workdir,
        t_io, monkeypatch):
    if t_io == "buffered":
        # This disk takes O_DIRECT; stand in for one that does not (the
        # probe itself is tested in tests/unit/common/test_fileutils.py).
        monkeypatch.setattr(qsd.fileutils, "supports_direct_io",
                            lambda path: False)
    # 96 MiB of the overlay's own data on a 256 MiB template with data.
    src = source(template_size=256 * MiB, writes=(
        (0xA1, 1 * MiB, 1 * MiB), (0xA2, 30 * MiB, 4 * MiB),
        (0xA3, 96 * MiB, 96 * MiB)))
    # A's own data (the reference is A as made, rebased onto local B).
    allocated = qemu_img.allocated_bytes(src.vol.reference, "qcow2")
    # The unsafe part, proven both ways before anything starts.
    assert baseproof.prove(src.nova.base, "raw", {
        "template": src.vol.template, "template_format": "qcow2"}) == {
            "method": "compare", "template": src.vol.template}
    digest = hashlib.sha256()
    view = os.path.join(workdir, "b-%s.raw" % uuid.uuid4().hex)
    images.run("qemu-img", "convert", "-f", "qcow2", "-O", "raw",
               src.vol.template, view)
    with open(view, "rb") as f:
        digest.update(f.read())
    os.unlink(view)
    assert baseproof.prove(src.nova.base, "raw", {
        "algorithm": "guest_sha256", "digest": digest.hexdigest(),
        "virtual_size": src.virtual_size})["method"] == "digest"

    target = make_target(src)
    t0 = time.monotonic()
    desc = target.prepare()
    prepare_s = time.monotonic() - t0
    remote = desc["nbd"]["socket"]
    assert remote.startswith(remote_dir + "/")
    # Handed to the source QEMU's user, nobody else.
    st = os.stat(remote)
    assert "%d:%d" % (st.st_uid, st.st_gid) == blockcopy.qemu_owner(src.dom)
    assert st.st_mode & 0o077 == 0
    # The agent's side is private.
    assert os.stat(target.run_dir).st_mode & 0o777 == 0o700

    job = blockcopy.BlockCopy(src.dom)
    faults_before = minor_faults(target.qsd.pid)
    job.start(desc["dest_xml"])
    # A write during the bulk phase.
    guest_write(src.dom, "write -P 0x11 40M 2M")
    seen = []
    job.wait_ready(180, progress=seen.append)
    mirror_s = job.ready_after
    # The daemon's allocator kept the NBD buffers it freed
    # (qsdgraph.MALLOC_TUNABLES): receiving the overlay faulted in far fewer
    # pages than it holds (with glibc's defaults: about one per 4 KiB).
    faults = minor_faults(target.qsd.pid) - faults_before
    print("\nqsd: %d minor faults for %d MiB mirrored"
          % (faults, allocated // MiB))
    assert faults < allocated // 4096 // 2
    assert seen[-1].ready and seen[-1].cur == seen[-1].end

    # Writes while READY: overlay-only, template-only (copy-on-write into
    # a B region), unaligned, a zero write, the last sector.
    for spec in ("write -P 0x5a 1536k 64k", "write -P 0x5b 10M 512k",
                 "write -P 0x5c 200M 4k", "write -P 0x5d 12345 1000",
                 "write -z 32M 1M",
                 "write -P 0x5e %d 512" % (src.virtual_size - 512)):
        guest_write(src.dom, spec)
    status = target.status()
    assert status["state"] == "exporting" and status["qsd_alive"]
    assert status["tunnel_alive"]
    # The daemon holds T with O_DIRECT where the file system allows it.
    assert bool(open_flags(target.qsd.pid, target.target_path)
                & os.O_DIRECT) == (t_io == "direct")

    # Cutover: suspend -> end the job (no pivot) -> close T.
    t0 = time.monotonic()
    timings = job.cutover()
    finished = target.finish()
    cutover_s = time.monotonic() - t0
    assert src.dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert not job.status().active
    src.dom.destroy()  # off the critical path (recipe: 1.2-2 s)

    qemu_img.check(target.target_path, "qcow2")
    qemu_img.compare(source_view(src, workdir), target.target_path,
                     "qcow2", "qcow2")
    # And the writes did happen (equal could also mean "neither got it").
    read_back(target.target_path, "read -P 0x11 40M 2M",
              "read -P 0x5a 1536k 64k", "read -P 0x5b 10M 512k",
              "read -P 0x5c 200M 4k", "read -P 0 32M 1M",
              "read -P 0x5e %d 512" % (src.virtual_size - 512))
    info = qemu_img.info(target.target_path, "qcow2")
    assert info["full-backing-filename"] == src.nova.base
    assert finished["target_path"] == target.target_path
    assert not os.path.exists(target.run_dir)
    # The daemon ignored QEMU's flushes; a buffered T was written behind
    # while the mirror filled it, and finish() left none of T's pages
    # dirty or still being written.
    assert (target.write_behind.calls > 0) == (t_io == "buffered")
    assert 0 <= finished["fsync_seconds"] <= finished["closed_seconds"]
    assert page_cache_state(target.target_path)[1:3] == (0, 0)
    harness.wait_for(lambda: not os.path.exists(remote), 10,
                     "the remote socket to be removed")

    # The raw transport on the same file, same sshd: ssh cat.
    t0 = time.monotonic()
    subprocess.run(sshcmd.build_argv(
        sshcmd.SshTarget(endpoint.host, endpoint.port, "root", "/"),
        ssh_options, sshcmd.remote_command("cat", "--", src.vol.overlay)),
        stdout=subprocess.DEVNULL, check=True)
    cat_s = time.monotonic() - t0
    size = os.path.getsize(src.vol.overlay)
    print("\nmirror: %.0f MiB allocated in %.2f s = %.0f MiB/s through the "
          "tunnel (ssh cat of the %.0f MiB file: %.2f s = %.0f MiB/s); "
          "prepare %.2f s; cutover: suspend %.1f ms + end job %.1f ms + "
          "close T %.1f ms (+ tunnel closed: %.1f ms in all)"
          % (allocated / MiB, mirror_s, allocated / MiB / mirror_s,
             size / MiB, cat_s, size / MiB / cat_s, prepare_s,
             timings["suspend"] * 1000, timings["abort"] * 1000,
             finished["closed_seconds"] * 1000, cutover_s * 1000))
    os.unlink(target.target_path)


# -- the clean cutover: the guest shuts down, QEMU's events prove T ---------


@pytest.fixture
def event_conn(services):
    """A libvirt connection that delivers domain events (the loop must be
    registered before the connection opens, as the conductor's is)."""
    virt.ensure_event_loop()
    conn = libvirt.open(harness.LIBVIRT_URI)
    yield conn
    conn.close()


def _ready_mirror(src, make_target, event_conn):
    """T exported for ``src``; the block copy READY, driven through
    ``event_conn``.  Returns (target, its description, domain, job)."""
    target = make_target(src)
    desc = target.prepare()
    dom = event_conn.lookupByName(src.name)
    job = blockcopy.BlockCopy(dom)
    job.start(desc["dest_xml"])
    job.wait_ready(120)
    return target, desc, dom, job


def test_clean_shutdown_cutover_proven_by_qemu_events(
        source, make_target, cloudstack_volume, kvm, event_conn, workdir):
    # This guest writes its boot sector to LBA 3 when it shuts down: an
    # application's last flush, which only a clean cutover carries over.
    vol = cloudstack_volume(shutdown_write=True)
    src = source(vol=vol)
    # Booted: it now answers the ACPI power button.
    harness.wait_console(kvm.console(src.name), vol.message)
    target, desc, dom, job = _ready_mirror(src, make_target, event_conn)
    guest_write(dom, "write -P 0x71 2M 64k")
    shutdown_write = images.SHUTDOWN_WRITE_OFFSET
    boot = images.read_bytes(target.target_path, 0, 512)
    assert images.read_bytes(target.target_path, shutdown_write, 512) != boot

    with sourceend.SourceEndWatch(event_conn, dom, "vda") as watch:
        status = job.check()
        assert status.ready and status.cur == status.end
        guest_write(dom, "write -P 0x72 7M 4k")
        # CloudStack's KVM agent stops a VM so: the power button first.
        dom.shutdown()
        # Decided by the job's end after the guest's shutdown, before
        # libvirt has reaped QEMU.
        assert watch.wait_decided(30)
        early = watch.verdict()
        assert watch.stopped is None
        # Then libvirt ends QEMU (on_poweroff destroy) and reaps it.
        assert watch.wait_ended(30)
        verdict = watch.verdict()
    for v in (early, verdict):
        assert v["guest_shutdown"] is True
        assert v["reason"] == "guest-shutdown"
        assert v["down_at"] == early["down_at"]
    assert early["ended"] == "job ended after the shutdown"
    assert verdict["ended"] in ("domain shut down", "domain destroyed")
    assert not running(dom)

    target.finish()
    qemu_img.check(target.target_path, "qcow2")
    qemu_img.compare(source_view(src, workdir), target.target_path,
                     "qcow2", "qcow2")
    read_back(target.target_path, "read -P 0x71 2M 64k",
              "read -P 0x72 7M 4k")
    # The guest's own last write, made while it shut down, is in T.
    assert images.read_bytes(target.target_path, shutdown_write, 512) == boot
    os.unlink(target.target_path)


def test_clean_cutover_refused_when_the_target_died_before_the_end(
        source, make_target, event_conn):
    src = source()
    target, desc, dom, job = _ready_mirror(src, make_target, event_conn)

    with sourceend.SourceEndWatch(event_conn, dom, "vda") as watch:
        os.kill(desc["qsd_pid"], signal.SIGKILL)
        # Completes on the source only; the domain ends right after, too
        # soon for libvirt's own block job event (it is dropped).
        guest_write(dom, "write -P 0x42 2M 64k")
        dom.destroy()
        assert watch.wait_ended(30)
        with pytest.raises(mirror_errors.BlockCopyFailed) as err:
            watch.verdict()
    assert "reported a write error on its target" in str(err.value)
    assert "the target misses writes" in str(err.value)


def test_clean_cutover_refused_when_the_job_ended_before_the_shutdown(
        source, make_target, cloudstack_volume, kvm, event_conn):
    vol = cloudstack_volume()
    src = source(vol=vol)
    harness.wait_console(kvm.console(src.name), vol.message)
    target, desc, dom, job = _ready_mirror(src, make_target, event_conn)

    with sourceend.SourceEndWatch(event_conn, dom, "vda") as watch:
        job.cancel()
        guest_write(dom, "write -P 0x43 3M 64k")
        kvm.stop(src.name, forced=False)
        assert watch.wait_ended(30)
        with pytest.raises(mirror_errors.BlockCopyFailed) as err:
            watch.verdict()
    assert "while the guest still ran" in str(err.value)


def test_job_events_wake_the_wait_when_the_mirror_is_ready(
        source, make_target, event_conn):
    src = source()
    target = make_target(src)
    desc = target.prepare()
    dom = event_conn.lookupByName(src.name)
    job = blockcopy.BlockCopy(dom)
    with blockcopy.JobEvents(event_conn, dom) as events:
        started = time.monotonic()
        job.start(desc["dest_xml"])
        woken = []
        status = job.check()
        while not (status.ready and status.cur == status.end):
            # A minute per sleep: READY comes in well under that only if
            # libvirt's event cuts a sleep short.
            woken.append(events.sleep(60))
            status = job.check()
            assert time.monotonic() - started < 60, woken
    assert woken and woken[-1] is True
    assert status.end > 0
    job.cancel()
    target.abort()
    assert_cleaned(target, desc)
    assert running(dom)


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


# -- the agent's RPC API 1.1 --------------------------------------------------


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
    assert mirror_agent.info["rpc_api_version"] == "1.1"
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
