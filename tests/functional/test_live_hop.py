"""The live mode's first hop against two real libvirtds (agent.live.hop).

A runs the counter guest (tools/testbed/live_guest) on the main libvirtd,
standing in for CloudStack's KVM host; a second libvirtd with a host UUID
of its own (tools/testbed/libvirtd_ns, a private mount namespace) stands
in for the Nova compute host.  Proven: the hop brings A over under a
temporary name with A's UUID, its disk onto the "Nova" path (pre-written
with junk, as a Nova boot would have left it: ``qemu-img compare`` says
identical), the guest's RAM counter goes on with no boot banner; then the
same-host move (agent.live.move) carries it into Nova's domain B there:
the whole two-hop path.  The undo: a persistent A keeps its definition,
shut off, and takes the guest back when the move after the hop fails.
The hop is client-managed: this process holds both connections (A's
libvirtd never logs in to the other).  Refusal: a missing disk file
leaves A running, its counter going on.  Heavy (KVM guests): run under
the lock, ``flock /tmp/cs2os-heavy.lock .tox/ci/bin/python -m pytest ...``.
"""

import os
import re
import shutil
import subprocess
import threading
import time
import uuid

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import hop
from cs2os_agent.agent.live import move
from tools.testbed import harness
from tools.testbed import libvirtd_ns
from tools.testbed import live_guest

LOCAL = "127.0.0.1"


@pytest.fixture(scope="module")
def nova_host():
    """The second libvirtd, and this process's connection to it."""
    daemon = libvirtd_ns.SecondLibvirtd(harness.RUN_ID).start()
    daemon.conn = libvirt.open(daemon.uri)
    yield daemon
    daemon.conn.close()
    base = daemon.path()
    daemon.stop()
    assert not os.path.exists(base)


class Guest:
    """A (the counter guest) on the main libvirtd, its files in ``d``."""

    def __init__(self, conn, workdir, persistent=False):
        self.tag = "cs2os-ft-hop-%s-%s" % (harness.RUN_ID,
                                           uuid.uuid4().hex[:6])
        self.d = os.path.join(workdir, self.tag)
        os.makedirs(self.d, mode=0o755)
        self.disk = live_guest.make_disk(self.file("a.qcow2"))
        self.nova_disk = self.file("disk")  # Nova's instance path
        self.consoles = [self.file(n) for n in ("a.log", "tmp.log", "b.log",
                                                "back.log")]
        self.watch = live_guest.SerialWatch(*self.consoles)
        self.watch.start()
        xml = live_guest.domain_a_xml(self.tag, str(uuid.uuid4()), self.disk,
                                      self.consoles[0])
        self.a = conn.defineXML(xml) if persistent else None
        if persistent:
            self.a.create()
        else:
            self.a = conn.createXML(xml, 0)
        self.uuid = self.a.UUIDString()
        self.watch.wait_counter(self.consoles[0], 10)

    def file(self, name):
        return os.path.join(self.d, name)

    def nova_layout(self):
        """Nova's disk: a qcow2 of A's size its first boot wrote to."""
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        self.nova_disk, str(16 * live_guest.MiB)], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "write -P 0x5a 0 1M", self.nova_disk], check=True,
                       capture_output=True)

    def hop(self, nova_host, **kwargs):
        kwargs.setdefault("dest_conn", nova_host.conn)
        kwargs.setdefault("files", {self.consoles[0]: self.consoles[1]})
        return hop.hop(self.a.connect(), self.a, kwargs.pop("dest_conn"),
                       {"vda": self.nova_disk}, "tmp-" + self.tag,
                       migrate_address=LOCAL, **kwargs)

    def goes_on(self, console, timeout=10):
        """The counter passes its last value by 30 on ``console``."""
        last = self.watch.counters(console)
        self.watch.wait_counter(console, (last[-1][1] if last else 0) + 30,
                                timeout)

    def counters(self):
        """All counters in order (files joined): each the last + 1."""
        values = self.watch.joined_counters(*self.consoles)
        assert values == list(range(values[0], values[0] + len(values)))
        return values

    def gap(self, before, after):
        """Seconds between the last counter on ``before`` and the first
        on ``after``: the pause as the guest's console shows it."""
        return (self.watch.counters(after)[0][0]
                - self.watch.counters(before)[-1][0])

    def close(self, conn):
        self.watch.stop()
        for d in conn.listAllDomains(0):
            if d.UUIDString() == self.uuid:
                persistent = d.isPersistent()
                if d.isActive():
                    d.destroy()
                if persistent:
                    d.undefine()
        shutil.rmtree(self.d, ignore_errors=True)


@pytest.fixture
def guest(conn, workdir):
    made = []

    def make(**kwargs):
        made.append(Guest(conn, workdir, **kwargs))
        return made[-1]

    yield make
    for g in made:
        g.close(conn)


class Listeners(threading.Thread):
    """Every TCP listener a QEMU of ``tag``'s guest opens (``ss -ltnp``)
    while the block runs."""

    def __init__(self, tag):
        super().__init__(daemon=True)
        self.tag, self.seen, self.done = tag, set(), threading.Event()

    def _ours(self, pid):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                return self.tag.encode() in f.read()
        except OSError:
            return False

    def run(self):
        while not self.done.is_set():
            out = subprocess.run(["ss", "-Hltnp"], capture_output=True,
                                 text=True, check=True).stdout
            for line in out.splitlines():
                pid = re.search(r'"qemu[^"]*",pid=(\d+)', line)
                if pid and self._ours(pid.group(1)):
                    self.seen.add(line.split()[3])
            time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def _compare(a_disk, b_disk):
    done = subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F",
                           "qcow2", a_disk, b_disk], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hop_then_move_carries_the_guest_into_nova(conn, nova_host, guest,
                                                    workdir):
    g = guest()
    g.nova_layout()
    with Listeners(g.tag) as ports:
        result = g.hop(nova_host)
    tmp = result.domain
    assert (tmp.name(), tmp.UUIDString()) == ("tmp-" + g.tag, g.uuid)
    assert virt.state(tmp) == virt.RUNNING and not tmp.isPersistent()
    assert virt.state(g.a) == virt.GONE  # a transient A is gone
    assert g.uuid not in [d.UUIDString() for d in conn.listAllDomains(0)]
    assert virt.domain_xml(tmp).find("devices/disk/source").get(
        "file") == g.nova_disk
    # Only the loopback address listened: RAM stream and NBD disk server.
    assert ports.seen and all(p.startswith(LOCAL + ":") for p in ports.seen)
    g.goes_on(g.consoles[1])
    assert g.watch.banners(g.consoles[1]) == 0
    hop_gap = g.gap(g.consoles[0], g.consoles[1])
    g.counters()
    tmp.suspend()
    try:
        _compare(g.disk, g.nova_disk)
    finally:
        tmp.resume()
    print("\nhop: QEMU downtime %s ms, serial gap %.1f ms, migration %s ms, "
          "call %.2f s, %d RAM bytes; listeners %s" % (
              result.downtime_ms, hop_gap * 1000, result.elapsed_ms,
              result.seconds, result.memory_bytes, sorted(ports.seen)))
    assert isinstance(result.downtime_ms, int) and result.downtime_ms < 2000
    assert 0 < hop_gap < 2.0

    # The second hop on the Nova host: into B on the same file.
    b_uuid = str(uuid.uuid4())
    b = nova_host.conn.defineXML(live_guest.domain_b_xml(
        "cs2os-ft-hop-%s-b" % harness.RUN_ID, b_uuid, g.nova_disk,
        g.consoles[2]))
    run_root = g.file("run")
    os.makedirs(run_root, mode=0o755)
    moved = move.move(nova_host.conn, tmp, b, run_root)
    try:
        assert virt.state(b) == virt.RUNNING and virt.state(tmp) == virt.GONE
        assert nova_host.conn.lookupByUUIDString(b_uuid).name() == b.name()
        g.goes_on(g.consoles[2])
        assert g.watch.banners(g.consoles[2]) == 0
        values = g.counters()
        print("move on the Nova host: QEMU downtime %s ms, serial gap %.1f ms;"
              " counter %d..%d over A, tmp, B" % (
                  moved.downtime_ms, g.gap(g.consoles[1], g.consoles[2])
                  * 1000, values[0], values[-1]))
    finally:
        b.destroy()
        b.undefine()


def test_failed_move_after_the_hop_goes_back_to_a_persistent_a(
        conn, nova_host, guest):
    g = guest(persistent=True)
    g.nova_layout()
    result = g.hop(nova_host)
    # A persistent A keeps its definition on the source, shut off.
    assert virt.state(g.a) == virt.SHUT_OFF and g.a.isPersistent()
    b = nova_host.conn.defineXML(live_guest.domain_b_xml(
        "cs2os-ft-hop-%s-b2" % harness.RUN_ID, str(uuid.uuid4()),
        g.nova_disk, g.consoles[2]))
    try:
        run_root = g.file("run")
        os.makedirs(run_root, mode=0o755)
        with pytest.raises(errors.LiveMoveFailed, match="cut after"):
            move.move(nova_host.conn, result.domain, b, run_root,
                      stream_limit=256 * 1024)
        assert virt.state(b) == virt.SHUT_OFF
    finally:
        b.undefine()
    g.goes_on(g.consoles[1])
    back = hop.hop_back(result, conn, migrate_address=LOCAL,
                        files={g.consoles[1]: g.consoles[3]})
    assert back.domain.name() == g.tag and back.domain.UUIDString() == g.uuid
    assert virt.state(g.a) == virt.RUNNING and g.a.isPersistent()
    assert virt.state(result.domain) == virt.GONE
    g.goes_on(g.consoles[3])
    assert g.watch.banners(g.consoles[3]) == 0
    g.counters()
    g.a.suspend()
    try:
        _compare(g.nova_disk, g.disk)
    finally:
        g.a.resume()
    print("\nhop back: QEMU downtime %s ms, serial gap %.1f ms"
          % (back.downtime_ms, g.gap(g.consoles[1], g.consoles[3]) * 1000))


def test_refused_hops_leave_a_running(conn, nova_host, guest):
    g = guest()
    # The disk file is missing: libvirt refuses on the Nova host.
    with pytest.raises(errors.HopRefused,
                       match="destination disk path is missing"):
        g.hop(nova_host)
    g.goes_on(g.consoles[0])
    assert virt.state(g.a) == virt.RUNNING
    assert g.uuid not in [d.UUIDString()
                          for d in nova_host.conn.listAllDomains(0)]
    assert g.watch.banners(g.consoles[0]) == 1
    assert g.watch.counters(g.consoles[1]) == []
    g.counters()
