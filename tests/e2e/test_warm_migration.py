"""Warm migration end to end: the CloudStack VM runs while its disk is
mirrored into Nova, then a cutover: CloudStack shuts the guest down
cleanly while the mirror keeps every write (the default), or the source is
frozen (force).

The whole chain for real: the CloudStack API stand-in whose VM is a running
transient KVM domain on CloudStack's NFS layout; cs2os-conductor, which
drives libvirt's block copy on the "KVM host" through qemu+ssh (host
key checked) and CloudStack's API; cs2os-agent, whose qemu-storage-daemon
exports the target over NBD through an ``ssh -R`` tunnel into the KVM
host's sshd (a private sshd on 127.0.0.1 allowing remote forwarding);
the minicloud's real Keystone, Glance, Placement and Nova.  Guest writes
are injected into the running source with HMP qemu-io; the result is
compared with ``qemu-img compare`` and the guest's own console.
"""

import hashlib
import os
import signal
import uuid

import libvirt
import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import context as cs2os_context
from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import new_vm
from tools.testbed import harness as ft
from tools.testbed import images
from tools.testbed import warm_chain
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_for
from tools.testbed.harness import wait_state
from tools.testbed.minicloud import admin_auth
from tools.testbed.process import gone

MiB = images.MiB
RUN_ID = ft.RUN_ID
WARM_STEPS = ["validate", "image", "ports", "boot", "mirror", "ready",
              "cutover", "finish", "swap", "start", "stop_source", "cleanup",
              "retire_source"]
# 80 Mbit/s = 10 MB/s for the bulk phase: a 40 MiB overlay copies for ~4 s,
# long enough to write into it while it runs.  READY-phase writes are
# synchronous whatever the cap.
MIRROR_MBPS = 80


# -- the chain, with what a warm migration adds -------------------------------


@pytest.fixture(scope="module")
def mirror_run_dir(workdir):
    return os.path.join(workdir, "warm-mirror")


@pytest.fixture(scope="module")
def agent(workdir, services, agent_api, minicloud, cloudstack_root,
          kvm_sshd, remote_dir, mirror_run_dir):
    """conftest's agent, plus the KVM host's ssh key and a [mirror]
    section (overrides it in this module)."""
    proc = warm_chain.make_agent(
        workdir, minicloud.compute_host, ft.TRANSPORT_URL,
        services["exchange"], minicloud.instances_path, cloudstack_root,
        kvm_sshd, remote_dir, mirror_run_dir)
    proc.start(agent_api, cs2os_context.get_admin_context())
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root, kvm_sshd):
    """conftest's conductor, plus the KVM host's libvirt URI and sshd
    port (overrides it in this module).  A module that imports it may
    set its own MIRROR_MBPS (0: unlimited, the option's default)."""
    name = "%s-%s" % (RUN_ID, request.module.__name__.rsplit(".", 1)[-1])
    proc = warm_chain.make_conductor(
        workdir, name, ft.TRANSPORT_URL, services["exchange"], cloud,
        admin_auth(minicloud), cloudstack_root, kvm_sshd,
        mirror_max_bandwidth_mbps=getattr(request.module, "MIRROR_MBPS",
                                          MIRROR_MBPS))
    proc.manage("db", "sync")
    proc.start()
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


@pytest.fixture(scope="module")
def kvm_conn(services):
    """The test's own look at the KVM host's libvirtd (guest writes)."""
    conn = libvirt.open(ft.LIBVIRT_URI)
    yield conn
    conn.close()


# -- helpers -----------------------------------------------------------------


def _get(conductor_api, ctxt, migration_id):
    return conductor_api.get_migration(ctxt, migration_id)


def wait_until(conductor_api, ctxt, migration_id, what, predicate,
               timeout=300):
    """Poll the record until ``predicate(record)``; fail on a final state."""
    seen = []

    def reached():
        m = _get(conductor_api, ctxt, migration_id)
        seen[:] = [m]
        if m["state"] in ("failed", "cancelled", "succeeded") and \
                not predicate(m):
            raise AssertionError("migration ended %s at %s before %s: %s"
                                 % (m["state"], m["step"], what, m["error"]))
        return predicate(m)

    try:
        wait_for(reached, timeout, what, interval=0.1)
    except AssertionError as exc:
        if "ended" in str(exc):
            raise
        m = seen[0]
        raise AssertionError("migration stayed %s at %s waiting for %s: %s"
                             % (m["state"], m["step"], what,
                                m["events"][-3:])) from None
    return seen[0]


def held_migration(conductor_api, ctxt, minicloud, vm):
    """A warm migration of ``vm`` held READY for the operator's cutover."""
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host, "mode": "warm",
        "cutover": "manual"})
    assert created["mode"] == "warm"
    assert created["options"]["cutover"] == "manual"
    assert created["options"]["cutover_method"] == "shutdown"
    return created["id"], wait_until(
        conductor_api, ctxt, created["id"], "mirror READY",
        lambda m: m["resources"].get("mirror_ready")
        and m["step"] == "ready")


def assert_source_untouched(cloud, kvm_conn, vm, digest=None):
    """The CloudStack VM runs (not paused) on its unchanged disk."""
    assert cloud.vm_state(vm) == "Running"
    dom = kvm_conn.lookupByName(vm.instancename)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert not dom.blockJobInfo("vda", 0)
    if digest is not None:
        assert images.sha256(vm.volume.overlay) == digest


def assert_target_cleaned(minicloud, record, mirror_run_dir):
    mirror = record["resources"].get("mirror") or {}
    for pid in (mirror.get("qsd_pid"), mirror.get("tunnel_pid")):
        if pid:
            wait_for(lambda p=pid: gone(p), 10, "pid %d to end" % pid)
    if mirror.get("nbd_socket"):
        wait_for(lambda: not os.path.exists(mirror["nbd_socket"]), 10,
                 "the tunnel's socket on the KVM host to go")
    if os.path.isdir(mirror_run_dir):
        assert os.listdir(mirror_run_dir) == []
    server_id = next(e["message"].split()[-1] for e in record["events"]
                     if e["message"].startswith("deleted server"))
    assert minicloud.conn.compute.find_server(server_id) is None
    assert not os.path.exists(os.path.join(minicloud.instances_path,
                                           server_id))


def assert_migrated(minicloud, record, vm, workdir, patterns=()):
    """The Nova server runs the CloudStack VM's disk, every write in it."""
    resources = record["resources"]
    server = minicloud.conn.compute.get_server(resources["server_id"])
    assert server.status == "ACTIVE"
    assert server.compute_host == minicloud.compute_host
    disk = os.path.join(minicloud.instances_path, server.id, "disk")
    base = os.path.join(minicloud.instances_path, "_base", hashlib.sha1(
        resources["image_id"].encode()).hexdigest())
    info = qemu_img.info(disk, "qcow2", force_share=True)
    assert info["backing-filename"] == base
    # The source stopped (its QEMU flushed A on the way out): its chain
    # and the migrated disk show the guest the same bytes.
    view = warm_chain.source_view(vm.volume, os.path.join(
        workdir, "view-%s.qcow2" % uuid.uuid4().hex))
    try:
        qemu_img.compare(view, disk, "qcow2", "qcow2", force_share=True)
        if patterns:
            # Equal could also mean "neither got it": they did.
            warm_chain.read_back(disk, *patterns)
            warm_chain.read_back(view, *patterns)
    finally:
        os.unlink(view)
    wait_console(os.path.join(minicloud.instances_path, server.id,
                              "console.log"), vm.volume.message)
    leftovers = [n for n in os.listdir(os.path.dirname(disk))
                 if n.startswith("disk.cs2os")]
    assert leftovers == []
    return server


# -- it works -----------------------------------------------------------------


def test_warm_migration_with_guest_writes(conductor, conductor_api, ctxt,
                                          cloud, minicloud, cloudstack_root,
                                          kvm_conn, workdir):
    # 40 MiB of the overlay's own data on a 64 MiB template; the guest's
    # boot sector and message (sectors 0-1) stay as they are.  When it
    # shuts down it writes its boot sector to LBA 3: an application's last
    # flush, which the clean cutover must carry over.
    vm = new_vm(cloud, cloudstack_root, writes=((0x5A, 4 * MiB, 40 * MiB),),
                shutdown_write=True)
    shutdown_write = images.SHUTDOWN_WRITE_OFFSET
    # The volume as made (A's header names the KVM host's path of B).
    boot = images.read_bytes(vm.volume.reference, 0, 512)
    assert images.read_bytes(vm.volume.reference, shutdown_write, 512) \
        != boot
    dom = kvm_conn.lookupByName(vm.instancename)
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host, "mode": "warm",
        "cutover": "manual"})
    mid = created["id"]

    # While the bulk copy runs: into the overlay's data and a template-only
    # region (copy-on-write into A).
    bulk = wait_until(conductor_api, ctxt, mid, "the bulk copy",
                      lambda m: m["resources"].get("mirror_started")
                      and m["bytes_done"])
    assert not bulk["resources"].get("mirror_ready")
    assert 0 < bulk["bytes_done"] < bulk["bytes_total"]
    written = []
    for spec in ("write -P 0x11 8M 1M", "write -P 0x12 50M 256k"):
        warm_chain.guest_write(dom, spec)
        written.append(spec)
    assert not _get(conductor_api, ctxt, mid)["resources"].get(
        "mirror_ready"), "the bulk phase ended before the writes"

    # READY: held for the operator; writes of every kind meanwhile.
    ready = wait_until(conductor_api, ctxt, mid, "READY",
                       lambda m: m["resources"].get("mirror_ready"))
    assert ready["step"] in ("mirror", "ready")
    for spec in ("write -P 0x21 4M 64k", "write -P 0x22 10M 512k",
                 "write -P 0x23 12345 1000", "write -z 20M 1M",
                 "write -P 0x24 %d 512" % (64 * MiB - 512)):
        warm_chain.guest_write(dom, spec)
        written.append(spec)
    held = _get(conductor_api, ctxt, mid)
    assert (held["state"], held["step"]) == ("running", "ready")
    assert held["bytes_done"] == held["bytes_total"] > 40 * MiB

    # Just before the cutover, then the operator's go.
    warm_chain.guest_write(dom, "write -P 0x31 30M 128k")
    written.append("write -P 0x31 30M 128k")
    conductor_api.cutover_migration(ctxt, mid)
    done = wait_state(conductor_api, ctxt, mid, ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert [e["step"] for e in done["events"] if e["message"] == "done"] \
        == WARM_STEPS

    patterns = [s.replace("write", "read", 1).replace("-z ", "-P 0 ")
                for s in written]
    assert_migrated(minicloud, done, vm, workdir, patterns)
    result = done["result"]
    # The D == B proof: the template's guest view was hashed and the
    # agent found D equal to it before mirroring anything.
    assert done["resources"]["base_proof"]["algorithm"] == "guest_sha256"
    assert result["template_guest_digest"]["digest"] == \
        done["resources"]["base_proof"]["digest"]
    assert any("D == B proven" in e["message"] for e in done["events"])
    # CloudStack shut the guest down; QEMU's events showed the mirror
    # whole until the domain ended.
    cutover = result["cutover"]
    assert cutover["method"] == "shutdown"
    assert cutover["guest_shutdown"] is True
    assert cutover["shutdown_reason"] == "guest-shutdown"
    assert any("clean guest shutdown" in e["message"]
               for e in done["events"])
    # The guest's last write, made while it shut down, is in Nova's disk.
    disk = os.path.join(minicloud.instances_path,
                        done["resources"]["server_id"], "disk")
    assert images.read_bytes(disk, shutdown_write, 512) == boot
    assert 0 < result["downtime_seconds"] < 30
    assert result["sync"]["staged_path"].endswith("disk.cs2os-staged")
    assert result["source_stopped"] is True
    # Stopped, then unmanaged after the commit: CloudStack forgot it.
    assert cloud.vm_state(vm) == "Unmanaged"
    assert not cloud.kvm.is_running(vm.instancename)
    # The proof came from the job's end, before libvirt reaped QEMU.
    assert cutover["proven_by"] == "job ended after the shutdown"
    assert not done["resources"].get("source_stop_job")
    print("\nwarm migration: mirror %(bytes)d bytes in %(seconds).2f s; "
          % result["mirror"] + "clean cutover: T proven %.2f s after the "
          "stop request; downtime (guest shut down -> Nova start "
          "requested) %.2f s" % (cutover["decided"],
                                 result["downtime_seconds"]))


def test_a_stop_job_failing_after_the_proven_cutover_still_commits(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        workdir):
    # CloudStack's stop job fails although the guest shut down (its KVM
    # agent timed out, say).  QEMU's events proved T first: the Nova
    # server runs the migrated disk and stays; CloudStack says Stopped.
    vm = new_vm(cloud, cloudstack_root, writes=((0x5B, 4 * MiB, 8 * MiB),))
    cloud.kvm.fail_after_stop[vm.instancename] = "agent timed out"
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host, "mode": "warm"})
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert done["result"]["cutover"]["proven_by"] in (
        "job ended after the shutdown", "domain shut down")
    (warning,) = [e for e in done["events"] if e["kind"] == "warning"]
    assert warning["step"] == "stop_source"
    assert "agent timed out" in warning["message"]
    assert cloud.vm_state(vm) == "Unmanaged"
    assert not cloud.kvm.is_running(vm.instancename)
    assert vm.instancename not in cloud.kvm.fail_after_stop
    assert_migrated(minicloud, done, vm, workdir,
                    ["read -P 0x5b 4M 8M"])


# -- abort and failures: the source never notices ----------------------------


def test_cancel_before_cutover_leaves_the_source_running_untouched(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        kvm_conn, mirror_run_dir):
    vm = new_vm(cloud, cloudstack_root)
    before = images.sha256(vm.volume.overlay)
    mid, held = held_migration(conductor_api, ctxt, minicloud, vm)
    assert held["resources"]["mirror"]["qsd_pid"]
    conductor_api.cancel_migration(ctxt, mid)
    done = wait_state(conductor_api, ctxt, mid,
                      ("cancelled", "failed", "succeeded"))
    assert done["state"] == "cancelled", (done["error"], done["events"])
    assert done["result"]["rolled_back"][:2] == [
        "ended the block copy",
        "removed the mirror target on %s" % minicloud.compute_host]
    assert_source_untouched(cloud, kvm_conn, vm, before)
    assert_target_cleaned(minicloud, done, mirror_run_dir)
    wait_console(cloud.kvm.console(vm.instancename), vm.volume.message)


@pytest.mark.parametrize("victim", ["tunnel_pid", "qsd_pid"])
def test_tunnel_or_daemon_dying_mid_mirror_then_a_retry(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        kvm_conn, mirror_run_dir, workdir, victim):
    vm = new_vm(cloud, cloudstack_root)
    mid, held = held_migration(conductor_api, ctxt, minicloud, vm)
    # A child of the agent this test started, by its PID.
    os.kill(held["resources"]["mirror"][victim], signal.SIGKILL)
    dom = kvm_conn.lookupByName(vm.instancename)
    # A guest write finds the target gone (the source keeps it).
    warm_chain.guest_write(dom, "write -P 0x41 6M 64k")
    failed = wait_state(conductor_api, ctxt, mid, ("failed", "succeeded"))
    assert (failed["state"], failed["step"]) == ("failed", "ready"), \
        failed["error"]
    words = {"tunnel_pid": "tunnel", "qsd_pid": "qemu-storage-daemon"}
    assert words[victim] in failed["error"]
    assert_source_untouched(cloud, kvm_conn, vm)
    assert_target_cleaned(minicloud, failed, mirror_run_dir)

    # A retry mirrors afresh and cuts over, forced (the source frozen, a
    # guest that would not shut down); the write made while the target
    # was dead is in it.
    conductor_api.retry_migration(ctxt, mid)
    wait_until(conductor_api, ctxt, mid, "READY again",
               lambda m: m["resources"].get("mirror_ready")
               and m["step"] == "ready")
    conductor_api.cutover_migration(ctxt, mid, method="force")
    done = wait_state(conductor_api, ctxt, mid, ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert done["options"]["cutover_requested"]["method"] == "force"
    assert done["result"]["cutover"]["method"] == "force"
    assert done["result"]["cutover"]["total"] < 1.0
    assert 0 < done["result"]["downtime_seconds"] < 10
    assert_migrated(minicloud, done, vm, workdir, ["read -P 0x41 6M 64k"])


# -- refusals -----------------------------------------------------------------


def test_base_differing_from_the_template_is_refused_before_any_copy(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        kvm_conn, mirror_run_dir):
    # A first VM of the template puts it in Glance (with its guest-view
    # digest) and in Nova's image cache D; its migration is then cancelled.
    first = new_vm(cloud, cloudstack_root)
    mid, held = held_migration(conductor_api, ctxt, minicloud, first)
    conductor_api.cancel_migration(ctxt, mid)
    assert wait_state(conductor_api, ctxt, mid,
                      ("cancelled", "failed"))["state"] == "cancelled"
    image_id = held["resources"]["image_id"]
    base = os.path.join(minicloud.instances_path, "_base",
                        hashlib.sha1(image_id.encode()).hexdigest())
    # D no longer shows the template's bytes: one byte in its data.
    with open(base, "r+b") as f:
        f.seek(10 * MiB + 7)
        original = f.read(1)
        f.seek(10 * MiB + 7)
        f.write(bytes([original[0] ^ 0xFF]))
    try:
        second = new_vm(cloud, cloudstack_root,
                        same_template_as=first.volume)
        before = images.sha256(second.volume.overlay)
        created = conductor_api.create_migration(ctxt, {
            "source": second.name, "host": minicloud.compute_host,
            "mode": "warm"})
        done = wait_state(conductor_api, ctxt, created["id"],
                          ("failed", "succeeded"))
    finally:
        with open(base, "r+b") as f:
            f.seek(10 * MiB + 7)
            f.write(original)
    assert (done["state"], done["step"]) == ("failed", "mirror"), \
        done["error"]
    assert "differs from the CloudStack template" in done["error"]
    assert done["result"]["image_reused"] is True
    # Refused before anything was exported or copied.
    assert "mirror" not in done["resources"]
    assert done["bytes_done"] == 0
    assert not any(e["message"].startswith("ended the block copy")
                   for e in done["events"])
    assert_source_untouched(cloud, kvm_conn, second, before)
    assert_target_cleaned(minicloud, done, mirror_run_dir)
