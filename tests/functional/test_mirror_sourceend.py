"""The clean cutover, for real: the guest shuts down, QEMU's events prove T.

On the testbed of tests/functional/mirror_fixtures.py, the block copy
READY: sourcehost/sourceend.py's watch decides from libvirt's domain and
block job events whether T holds every write of the source (or refuses
the clean cutover), and blockcopy.JobEvents wakes the wait for READY.
"""

import os
import signal
import time

import libvirt
import pytest

from cs2os_agent import qemu_img
from cs2os_agent import virt
from cs2os_agent.common import mirror_errors
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import sourceend
from tests.functional.mirror_fixtures import assert_cleaned
from tests.functional.mirror_fixtures import endpoint_fixture  # noqa: F401
from tests.functional.mirror_fixtures import guest_write
from tests.functional.mirror_fixtures import kvm_fixture  # noqa: F401
from tests.functional.mirror_fixtures import make_target_fixture  # noqa: F401
from tests.functional.mirror_fixtures import remote_dir_fixture  # noqa: F401
from tests.functional.mirror_fixtures import run_root_fixture  # noqa: F401
from tests.functional.mirror_fixtures import running
from tests.functional.mirror_fixtures import server_fixture  # noqa: F401
from tests.functional.mirror_fixtures import source_fixture  # noqa: F401
from tests.functional.mirror_fixtures import source_view
from tests.functional.mirror_fixtures import ssh_options_fixture  # noqa: F401
from tools.testbed import harness
from tools.testbed import images
from tools.testbed.warm_chain import read_back


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
