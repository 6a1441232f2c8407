"""The live mode survives a libvirtd restart on either side (issue 20).

Every restarted libvirtd is a private one (tools/testbed/libvirtd_ns,
:meth:`SecondLibvirtd.restart`: the daemon alone stopped and started
again in its namespace, its QEMU processes running on, as a
``systemctl restart libvirtd`` or a crash leaves them); the main
libvirtd, which other tests use, is never restarted.

The guest is live_kvm's counter guest that also writes its counter to
its disk (LBA 1), with a pattern written over 8 MiB of the disk first.
Each case ends with exactly one running copy of the guest, its RAM
counter going on with no second boot banner, the other domain shut off
or gone, the disk clean (``qemu-img check``), the pattern there and the
counter on disk still moving (the running copy writes to it); the call
raised the error that says so; then a retry, with nothing restarted,
succeeds from there:

- the move (A and B on one libvirtd, ``nova``), that libvirtd restarted
  (a) while B's QEMU waits paused for the stream (the before_stream
  hook), (b) while A's stream runs (a slow relay, ``stream_rate``):
  LiveMoveFailed, A runs;
- the hop (A on ``kvm``, to ``nova``, at 1 MiB/s so it lasts seconds),
  (c) the destination's libvirtd restarted midway, (d) the source's:
  HopFailed, A runs on the source.

The shared pieces: tests/functional/live_restarts.py; the same over the
agent's RPC endpoints: test_live_restarts_rpc.py.

Heavy (KVM guests, two libvirtds): run under the lock,
``flock /tmp/cs2os-heavy.lock .tox/ci/bin/python -m pytest ...``.
"""

import os

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import hop
from cs2os_agent.agent.live import move
from tests.functional import live_restarts as lr
from tools.testbed import live_guest

LOCAL = lr.LOCAL
nova, kvm, guest = lr.nova, lr.kvm, lr.guest  # the fixtures
Restart = lr.Restart


def _streaming(daemon, g):
    """A's QEMU migration (the move's QMP one) is sending: its status."""
    conn = lr.open_conn(daemon)
    try:
        stats = move.qmp(conn.lookupByUUIDString(g.a_uuid),
                         "query-migrate") or {}
    except move._Failed:  # noqa: SLF001 - not started yet
        return None
    finally:
        conn.close()
    ram = (stats.get("ram") or {}).get("transferred", 0)
    if stats.get("status") == "active" and ram > 64 * 1024:
        return "A's stream active, %d bytes sent" % ram
    return None


def _hopping(daemon, g):
    """A's libvirt migration job has run for a second: its stats."""
    conn = lr.open_conn(daemon)
    try:
        stats = conn.lookupByUUIDString(g.a_uuid).jobStats()
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()
    if stats.get("type") == libvirt.VIR_DOMAIN_JOB_UNBOUNDED and \
            stats.get("time_elapsed", 0) > 1000:
        return "hop running %d ms, %s disk bytes, %s RAM bytes" % (
            stats["time_elapsed"], stats.get("disk_processed"),
            stats.get("memory_processed"))
    return None


def _move(g, **kwargs):
    conn = lr.open_conn(g.nova)
    try:
        return move.move(conn, conn.lookupByUUIDString(g.a_uuid),
                         conn.lookupByUUIDString(g.b_uuid), g.run_root,
                         **kwargs)
    finally:
        virt.close_quietly(conn)


def _retry_move(g):
    """With nothing restarted, the move from there works: B runs the
    guest, A is gone."""
    _move(g)
    assert lr.state(g.nova, g.b_uuid) == virt.RUNNING
    assert lr.state(g.nova, g.a_uuid) == virt.GONE
    g.goes_on(g.consoles[2])
    lr.consecutive(g.watch.joined_counters(*g.consoles))
    assert g.watch.banners(g.consoles[2]) == 0


def _undone_then_retried(g, nova, restart, **move_kwargs):
    """The move, with ``restart`` in its course, fails undone: A runs the
    guest alone (B never printed), the disk kept every write, the move's
    directory is gone; then a retry with nothing restarted succeeds."""
    with pytest.raises(errors.LiveMoveFailed, match="runs again") as exc:
        try:
            _move(g, **move_kwargs)
        finally:
            restart.check()
    print("move failed: %s" % exc.value)
    g.one_copy(nova, g.consoles[0], gone=[(nova, g.b_uuid)])
    assert g.watch.counters(g.consoles[2]) == []
    g.disk_intact(nova, g.nova_disk, restart.at)
    assert os.listdir(g.run_root) == []
    _retry_move(g)


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_move_restart_while_b_waits_for_the_stream(nova, guest, crash):
    g = guest(nova, nova)
    live_guest.blockcopy_pivot(g.a, "vda", g.nova_disk)
    restart = Restart(nova, g, lambda: "B paused, waiting", crash)

    def before_stream():
        assert lr.state(nova, g.b_uuid) == virt.PAUSED
        restart.start()
        restart.join(120)

    _undone_then_retried(g, nova, restart, before_stream=before_stream)


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_move_restart_while_the_stream_runs(nova, guest, crash):
    g = guest(nova, nova)
    live_guest.blockcopy_pivot(g.a, "vda", g.nova_disk)
    restart = Restart(nova, g, lambda: _streaming(nova, g), crash)
    # ~10 s for the few MiB a near-idle guest's stream has
    _undone_then_retried(g, nova, restart, before_stream=restart.start,
                         stream_rate=256 * 1024)


def _hop(g, kvm, nova, **kwargs):
    src, dst = lr.open_conn(kvm), lr.open_conn(nova)
    try:
        return hop.hop(src, src.lookupByUUIDString(g.a_uuid), dst,
                       {"vda": g.nova_disk}, g.temp,
                       files={g.consoles[0]: g.consoles[1]},
                       migrate_address=LOCAL, **kwargs)
    finally:
        virt.close_quietly(src)
        virt.close_quietly(dst)


def _hop_restarted(g, kvm, nova, restarted, crash):
    restart = Restart(restarted, g, lambda: _hopping(kvm, g), crash)
    restart.start()
    with pytest.raises(errors.HopFailed,
                       match="runs on the source again") as exc:
        try:
            # 8 MiB of disk data at 1 MiB/s: the hop lasts seconds.
            _hop(g, kvm, nova, bandwidth_mib=1)
        finally:
            restart.check()
    print("hop failed: %s" % exc.value)
    g.one_copy(kvm, g.consoles[0], gone=[(nova, g.a_uuid)])
    assert g.watch.counters(g.consoles[1]) == []
    g.disk_intact(kvm, g.disk, restart.at)
    # The retry, with nothing restarted: the guest hops, its disk along.
    result = _hop(g, kvm, nova)
    assert result.domain.name() == g.temp
    assert lr.state(kvm, g.a_uuid) == virt.GONE
    g.goes_on(g.consoles[1])
    lr.consecutive(g.watch.joined_counters(*g.consoles))
    assert g.watch.banners(g.consoles[1]) == 0
    g.disk_intact(nova, g.nova_disk, 0)


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_hop_destination_libvirtd_restarted_midway(kvm, nova, guest, crash):
    _hop_restarted(guest(kvm, nova), kvm, nova, nova, crash)


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_hop_source_libvirtd_restarted_midway(kvm, nova, guest, crash):
    _hop_restarted(guest(kvm, nova), kvm, nova, kvm, crash)
