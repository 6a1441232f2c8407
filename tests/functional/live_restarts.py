"""What the live mode's libvirtd restart tests share (test_live_restarts
and test_live_restarts_rpc): two private libvirtds (``nova``, ``kvm``,
restartable: tools/testbed/libvirtd_ns), the guest and its checks, and a
restart on cue (:class:`Restart`)."""

import os
import shutil
import subprocess
import threading
import time
import uuid

import libvirt
import pytest

from cs2os_agent import virt
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import libvirtd_ns
from tools.testbed import live_guest
from tools.testbed import live_kvm

LOCAL = "127.0.0.1"
SIZE = 16 * live_guest.MiB
PATTERN = "-P 0x5c %d %d" % (live_guest.MiB, 8 * live_guest.MiB)


def daemon_fixture(tag):
    daemon = libvirtd_ns.SecondLibvirtd(harness.RUN_ID + tag).start()
    yield daemon
    print("\n%s (its log's end):\n%s" % (daemon.uri, daemon.log_tail(40)))
    base = daemon.path()
    daemon.stop()
    assert not os.path.exists(base)


@pytest.fixture(scope="module")
def nova():
    """The Nova host's libvirtd: B, the move, the hop's destination."""
    yield from daemon_fixture("-rn")


@pytest.fixture(scope="module")
def kvm():
    """The CloudStack KVM host's libvirtd: A before the hop; its socket
    also by the host's address (live_kvm.uri_template)."""
    for daemon in daemon_fixture("-rk"):
        os.symlink("run", daemon.path(LOCAL))
        yield daemon


def open_conn(daemon):
    """A new connection (a restart kills the ones before)."""
    return libvirt.open(daemon.uri)


def state(daemon, dom_uuid):
    conn = open_conn(daemon)
    try:
        return virt.state(conn.lookupByUUIDString(dom_uuid))
    except libvirt.libvirtError:
        return virt.GONE
    finally:
        conn.close()


class Guest:
    """A (the disk-writing counter guest) running on ``daemon``; B (Nova's
    domain, shut off) defined on ``nova`` on Nova's disk file."""

    def __init__(self, daemon, nova, workdir):
        self.daemon, self.nova = daemon, nova
        self.tag = "cs2os-ft-rst-%s-%s" % (harness.RUN_ID,
                                           uuid.uuid4().hex[:6])
        self.d = os.path.join(workdir, self.tag)
        os.makedirs(self.d, mode=0o755)
        self.run_root = self.file("run")
        os.makedirs(self.run_root, mode=0o755)
        self.disk = live_guest.make_disk(self.file("a.qcow2"), SIZE)
        images.write_bytes(self.disk, 0, live_kvm.DISK_COUNTER_SECTOR)
        qemu_io(self.disk, "write " + PATTERN)
        self.nova_disk = self.file("disk")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        self.nova_disk, str(SIZE)], check=True)
        os.chmod(self.nova_disk, 0o644)
        # (the temporary domain's console: the agent's name for it)
        self.consoles = [self.file(n) for n in (
            "a.log", "console.cs2os-live-0.log", "b.log")]
        self.watch = live_guest.SerialWatch(*self.consoles)
        self.watch.start()
        self.a_uuid, self.b_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        self.temp = "tmp-" + self.tag
        conn = open_conn(nova)
        try:
            conn.defineXML(live_guest.domain_b_xml(
                self.tag + "-b", self.b_uuid, self.nova_disk,
                self.consoles[2]))
        finally:
            conn.close()
        self.conn = open_conn(daemon)
        self.a = self.conn.createXML(live_guest.domain_a_xml(
            self.tag, self.a_uuid, self.disk, self.consoles[0]), 0)
        self.watch.wait_counter(self.consoles[0], 10)

    def file(self, name):
        return os.path.join(self.d, name)

    def last(self):
        """The guest's last counter, on whichever console."""
        return self.watch.joined_counters(*self.consoles)[-1]

    def goes_on(self, console, timeout=15):
        self.watch.wait_counter(console, self.last() + 30, timeout)

    def one_copy(self, daemon, console, gone=()):
        """The guest runs only as A's UUID on ``daemon``, on ``console``,
        its counter continuous and never rebooted; ``gone``: (daemon,
        UUID) that must be shut off or gone."""
        assert state(daemon, self.a_uuid) == virt.RUNNING
        for other, dom_uuid in gone:
            assert state(other, dom_uuid) in (virt.SHUT_OFF, virt.GONE)
        self.goes_on(console)
        consecutive(self.watch.joined_counters(*self.consoles))
        assert sum(self.watch.banners(c) for c in self.consoles) == 1

    def disk_intact(self, daemon, path, since):
        """Clean, the pattern there, and the guest's counter on LBA 1 at
        or past ``since``: the running copy writes to ``path``."""
        conn = open_conn(daemon)
        dom = conn.lookupByUUIDString(self.a_uuid)
        time.sleep(0.2)  # a few more counters written
        dom.suspend()
        try:
            subprocess.run(["qemu-img", "check", "-U", "-q", path],
                           check=True)
            qemu_io(path, "read " + PATTERN, "-U", "-r")
            assert live_kvm.disk_counter(path) >= since
        finally:
            dom.resume()
            conn.close()

    def close(self):
        self.watch.stop()
        for daemon in {self.daemon, self.nova}:
            try:
                conn = open_conn(daemon)
            except libvirt.libvirtError:
                continue  # its stop destroys what it runs
            try:
                for dom in conn.listAllDomains(0):
                    if dom.UUIDString() in (self.a_uuid, self.b_uuid):
                        live_guest.remove_domain(dom)
            finally:
                conn.close()
        virt.close_quietly(self.conn)
        shutil.rmtree(self.d, ignore_errors=True)


def consecutive(values):
    assert values == list(range(values[0], values[0] + len(values)))


def qemu_io(path, command, *opts):
    subprocess.run(["qemu-io", *opts, "-f", "qcow2", "-c", command, path],
                   check=True, capture_output=True)


@pytest.fixture
def guest(workdir):
    made = []

    def make(daemon, nova):
        made.append(Guest(daemon, nova, workdir))
        return made[-1]

    yield make
    for g in made:
        g.close()


class Restart(threading.Thread):
    """``daemon`` restarted once ``ready()`` says so (polled); the
    counter seen on A's console then is ``at``."""

    def __init__(self, daemon, g, ready, crash=False):
        super().__init__(name="restart", daemon=True)
        self.daemon, self.g, self.ready, self.crash = daemon, g, ready, crash
        self.error = self.pid = self.at = self.why = None

    def run(self):
        try:
            deadline = time.monotonic() + 30
            while not self.why:
                if time.monotonic() > deadline:
                    raise AssertionError("never ready to restart")
                self.why = self.ready()
                time.sleep(0.05)
            self.at = self.g.last()
            self.pid = self.daemon.restart(crash=self.crash)
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            self.error = exc

    def check(self):
        self.join(120)
        assert self.error is None and self.pid, (self.error, self.why,
                                                 self.daemon.log_tail())
        print("\nlibvirtd restarted (%s): %s" % (
            "killed" if self.crash else "stopped", self.why))
