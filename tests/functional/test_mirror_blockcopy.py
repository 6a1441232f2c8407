"""The warm mirror, for real, through the tunnel while the guest writes.

On the testbed of tests/functional/mirror_fixtures.py: the base proven
both ways, T prepared and exported, libvirt's block copy of A into T with
guest writes during the bulk phase and while READY; after the cutover
(suspend, end the job, close T) ``qemu-img compare`` of the source chain
and T must find them identical, with T durable on disk.
"""

import ctypes
import hashlib
import os
import subprocess
import time
import uuid

import libvirt
import pytest

from cs2os_agent import qemu_img
from cs2os_agent.agent.mirror import baseproof
from cs2os_agent.agent.mirror import qsd
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.transfer import sshcmd
from tests.functional.mirror_fixtures import MiB
from tests.functional.mirror_fixtures import endpoint_fixture  # noqa: F401
from tests.functional.mirror_fixtures import guest_write
from tests.functional.mirror_fixtures import kvm_fixture  # noqa: F401
from tests.functional.mirror_fixtures import make_target_fixture  # noqa: F401
from tests.functional.mirror_fixtures import remote_dir_fixture  # noqa: F401
from tests.functional.mirror_fixtures import run_root_fixture  # noqa: F401
from tests.functional.mirror_fixtures import server_fixture  # noqa: F401
from tests.functional.mirror_fixtures import source_fixture  # noqa: F401
from tests.functional.mirror_fixtures import source_view
from tests.functional.mirror_fixtures import ssh_options_fixture  # noqa: F401
from tools.testbed import harness
from tools.testbed import images
from tools.testbed.warm_chain import read_back


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
