"""A second libvirtd on this machine, so libvirt can migrate between two.

libvirt refuses to migrate a domain into the libvirtd it runs on
(``Attempt to migrate guest to the same host``): it compares the host
UUIDs of the two ends.  The live mode's first hop (CloudStack's KVM host
to the Nova compute host, recipes/live-into-nova) is such a migration, so
its tests need a second libvirtd with a host UUID of its own, as the
recipe's e2 run had.

:class:`SecondLibvirtd` starts one (and the virtlogd it needs for console
logs) in a private mount namespace (``unshare -m``).  Inside it, fresh
directories of its own are bind-mounted over /etc/libvirt (its
libvirtd.conf carries its own ``host_uuid``), /run/libvirt (its sockets
and domain state), /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt; the main libvirtd's files are not touched, and
nothing mounted in there shows outside.  Everything else (/var/tmp, where
the tests keep their disks, /dev/kvm, the cgroups) is shared, as it is
for two hosts that share nothing but a network.

Reaching it, nothing listens on TCP:

- :attr:`SecondLibvirtd.uri`: its unix socket, seen from outside through
  the backing directory (the main libvirtd uses it for a peer-to-peer
  migration into the second one, the tests' client for everything else);
- :attr:`SecondLibvirtd.main_uri`: the main libvirtd's socket as the
  second one sees it (the original /run/libvirt, bind-mounted first under
  its own directory), for a migration back.

Migration data goes to 127.0.0.1 only, but not by qemu.conf: libvirt
refuses a loopback ``migration_address`` or ``migration_host`` there
("must not be the address of the local machine").  Each migration names
it instead (the hop's ``migrate_address``: libvirt's ``listen_address``
and ``migrate_uri`` params), and the destination's QEMU then listens on
127.0.0.1 for the RAM stream and the NBD disk copy alike.  Its migration
ports are a range of their own.  Stopping ends the namespace's helper by
its PID (it ends libvirtd, then virtlogd, its own children); the
directories are removed.  Domains it still runs are destroyed first.
:meth:`SecondLibvirtd.restart` restarts the libvirtd alone, in place (the
live mode's failure tests): the helper stops its libvirtd (SIGTERM, or
SIGKILL for a crash) and starts the next one in the same namespace, on
the same state; QEMU processes run on and it reconnects to them.

Run as a script (``libvirtd_ns.py ns BASE``) it is that helper, inside
the namespace: the mounts, then the two daemons, until SIGTERM (SIGUSR1 /
SIGUSR2: restart libvirtd, stopped by SIGTERM / SIGKILL).
"""

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import libvirt

DIRS = {  # our directory -> where it is mounted inside the namespace
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
MAIN_CACHE = "/var/cache/libvirt"
# The main libvirtd's sockets, reachable from inside under this name.
MAIN_RUN = "main-run"
# The caller's extra bind mounts, {source: target}, read inside.
MOUNTS = "mounts.json"
# Not the main libvirtd's default range (49152-49215): a migration back
# then never waits for a port the other end holds.
PORT_MIN, PORT_MAX = 49400, 49463
# restart(): the helper's signal -> the one it sends its libvirtd (a
# stop as ``systemctl restart`` makes it, or a crash).
RESTART_SIGNALS = {signal.SIGUSR1: signal.SIGTERM,
                   signal.SIGUSR2: signal.SIGKILL}
# "<generation> <libvirtd pid>", rewritten by the helper at each start.
GENERATION = "libvirtd.generation"
# Seconds the daemon stays down in a restart, read by the helper.
RESTART_HOLD = "restart-hold"
# A daemon told to stop (SIGTERM) is killed after this long, as systemd
# does (libvirtd waits for its jobs: an incoming migration's may not end).
STOP_GRACE = 15


def libvirtd_conf(host_uuid, log_dir):
    return "\n".join([
        'host_uuid = "%s"' % host_uuid,
        'auth_unix_rw = "none"',
        'auth_unix_ro = "none"',
        'unix_sock_rw_perms = "0700"',
        'unix_sock_ro_perms = "0700"',
        'unix_sock_admin_perms = "0700"',
        'log_outputs = "3:file:%s/libvirtd.log"' % log_dir,
        ""])


def qemu_conf():
    return "\n".join([
        "migration_port_min = %d" % PORT_MIN,
        "migration_port_max = %d" % PORT_MAX,
        ""])


class SecondLibvirtd:
    """A libvirtd in a mount namespace of its own, with its own host UUID.

    ``name``: what its directory is called after (the tests pass
    ``harness.RUN_ID``).  ``mounts``: {directory: where it shows inside},
    e.g. the CloudStack stand-in's <root>/mnt at /mnt, so that a disk
    header naming /mnt/<pool>/<template> opens there as on a CloudStack
    KVM host (a migration onto such a disk needs it).  :meth:`start`
    returns once it answers.
    """

    stop_timeout = 30

    def __init__(self, name, parent="/var/tmp", mounts=None):
        self.name = name
        self.parent = parent
        self.mounts = dict(mounts or {})
        self.host_uuid = str(uuid.uuid4())
        self.base = None
        self.proc = None

    @property
    def uri(self):
        return "qemu+unix:///system?socket=%s/run/libvirt-sock" % self.base

    @property
    def main_uri(self):
        return "qemu+unix:///system?socket=%s/%s/libvirt-sock" % (
            self.base, MAIN_RUN)

    def path(self, *parts):
        return os.path.join(self.base, *parts)

    def _prepare(self):
        self.base = tempfile.mkdtemp(
            prefix="cs2os-libvirtd-%s-" % self.name, dir=self.parent)
        # QEMU (libvirt-qemu) walks through lib/ (its domain directories)
        # and run/ (its state) inside the namespace.
        os.chmod(self.base, 0o755)  # noqa: S103
        for sub in list(DIRS) + [MAIN_RUN]:
            if sub != "cache":
                os.mkdir(self.path(sub), 0o755)
        # The main libvirtd's probe of QEMU, reused (libvirt checks it is
        # for this QEMU binary and libvirt build): it starts in ~1 s, not
        # the ~12 s a fresh probe takes.
        shutil.copytree(MAIN_CACHE, self.path("cache"), symlinks=True)
        for sub in ("qemu", "nwfilter", "secrets"):
            os.mkdir(self.path("etc", sub), 0o700)
        # /var/log/libvirt as seen inside the namespace
        with open(self.path("etc", "libvirtd.conf"), "w") as f:
            f.write(libvirtd_conf(self.host_uuid, DIRS["log"]))
        with open(self.path("etc", "qemu.conf"), "w") as f:
            f.write(qemu_conf())
        with open(self.path("etc", "virtlogd.conf"), "w") as f:
            f.write('log_outputs = "3:file:%s/virtlogd.log"\n' % DIRS["log"])
        with open(self.path(MOUNTS), "w") as f:
            json.dump(self.mounts, f)

    def start(self, timeout=60):
        self._prepare()
        with open(self.path("helper.log"), "wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--",
                 sys.executable, os.path.abspath(__file__), "ns", self.base],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        try:
            self._wait(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def _wait(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the second libvirtd ended (%s): %s"
                                   % (self.proc.returncode, self.log_tail()))
            if os.path.exists(self.path("run", "libvirt-sock")):
                try:
                    conn = libvirt.open(self.uri)
                    try:
                        caps = conn.getCapabilities()
                    finally:
                        conn.close()
                    if self.host_uuid in caps:
                        return
                    last = "another host UUID in its capabilities"
                except libvirt.libvirtError as exc:
                    last = exc.get_error_message()
            time.sleep(0.1)
        raise RuntimeError("the second libvirtd did not answer in %d s (%s): "
                           "%s" % (timeout, last, self.log_tail()))

    def daemon_pid(self):
        """(generation, PID) of the libvirtd running now (0: the first)."""
        with open(self.path(GENERATION)) as f:
            generation, pid = f.read().split()
        return int(generation), int(pid)

    def restart(self, crash=False, hold=0.0, timeout=90):
        """Restart the daemon in place, as ``systemctl restart libvirtd``
        (SIGTERM) or a crash (``crash``: SIGKILL) and a new start would:
        only the libvirtd PID the helper started is signalled, by the
        helper (it alone is in the namespace and can start the next one
        there); the QEMU processes run on and the next libvirtd
        reconnects to them (one that does not stop in STOP_GRACE seconds
        is killed, as systemd would).  ``hold``: seconds it stays down.
        Returns once the new one answers (its PID)."""
        generation, old_pid = self.daemon_pid()
        with open(self.path(RESTART_HOLD), "w") as f:
            f.write(repr(float(hold)))
        self.proc.send_signal(signal.SIGUSR2 if crash else signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while self.daemon_pid()[0] == generation:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the second libvirtd (PID %d) was not "
                                   "restarted: %s" % (old_pid,
                                                      self.log_tail()))
            time.sleep(0.05)
        self._wait(max(1.0, deadline - time.monotonic()))
        return self.daemon_pid()[1]

    def log_tail(self, lines=20):
        out = []
        for name in ("helper.log", "log/libvirtd.log"):
            try:
                with open(self.path(name), errors="replace") as f:
                    out += ["%s: %s" % (name, line.rstrip())
                            for line in f.readlines()[-lines:]]
            except OSError:
                pass
        return "\n".join(out)

    def destroy_domains(self):
        """Every domain it runs destroyed, every one defined undefined:
        only this daemon's, which only our tests use."""
        # Here, not at the top: this file also runs as a script inside the
        # namespace, where the tools package is not importable.
        from tools.testbed import live_guest

        conn = libvirt.open(self.uri)
        try:
            for dom in conn.listAllDomains(0):
                live_guest.remove_domain(dom)
        finally:
            conn.close()

    def stop(self):
        """Stop the helper by its PID (it ends its daemons), remove the
        directories.  Domains are destroyed first while it answers."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.destroy_domains()
            except libvirt.libvirtError as exc:
                print("second libvirtd: cannot destroy its domains: %s"
                      % exc.get_error_message(), file=sys.stderr)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                # Its group: the helper and its two daemons, nothing else
                # (QEMU runs in a session of its own).
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


# -- inside the namespace ----------------------------------------------------


def _bind(source, target):
    subprocess.run(["mount", "--bind", source, target], check=True)


def _die_with_parent():
    """SIGTERM when the test process that started us dies (killed
    without teardown): the daemons then end with it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_libvirtd(base, generation):
    proc = subprocess.Popen(
        ["libvirtd", "-f", "/etc/libvirt/libvirtd.conf",
         "-p", os.path.join(base, "libvirtd.pid")])
    # Written after the start: restart() waits for the next generation.
    tmp = os.path.join(base, GENERATION + ".tmp")
    with open(tmp, "w") as f:
        f.write("%d %d\n" % (generation, proc.pid))
    os.replace(tmp, os.path.join(base, GENERATION))
    return proc


def _ns_main(base):
    # The main libvirtd's sockets first, before /run/libvirt is covered.
    _bind(DIRS["run"], os.path.join(base, MAIN_RUN))
    for sub, target in DIRS.items():
        _bind(os.path.join(base, sub), target)
    with open(os.path.join(base, MOUNTS)) as f:
        for source, target in json.load(f).items():
            _bind(source, target)
    virtlogd = subprocess.Popen(
        ["virtlogd", "-f", "/etc/libvirt/virtlogd.conf",
         "-p", os.path.join(base, "virtlogd.pid")])
    daemon = {"proc": _start_libvirtd(base, 0), "generation": 0}
    stopping, restarts = [], []

    def on_term(_signum, _frame):
        stopping.append(True)
        if daemon["proc"].poll() is None:
            daemon["proc"].terminate()

    def on_restart(signum, _frame):
        # Only the daemon: QEMU processes live on (a session of their
        # own) and the next libvirtd reconnects to them.
        restarts.append(signum)
        daemon["kill_at"] = time.monotonic() + STOP_GRACE
        if daemon["proc"].poll() is None:
            daemon["proc"].send_signal(RESTART_SIGNALS[signum])

    signal.signal(signal.SIGTERM, on_term)
    for signum in RESTART_SIGNALS:
        signal.signal(signum, on_restart)
    _die_with_parent()
    while True:
        try:
            code = daemon["proc"].wait(0.2)
        except subprocess.TimeoutExpired:
            if restarts and time.monotonic() > daemon["kill_at"]:
                print("libvirtd did not stop in %d s: killed" % STOP_GRACE,
                      flush=True)
                daemon["proc"].kill()
            continue
        print("libvirtd (PID %d) ended: %s" % (daemon["proc"].pid, code),
              flush=True)
        if stopping or not restarts:
            break
        restarts.clear()
        try:
            with open(os.path.join(base, RESTART_HOLD)) as f:
                time.sleep(float(f.read() or 0))
        except (OSError, ValueError):
            pass
        if stopping:
            break
        daemon["generation"] += 1
        daemon["proc"] = _start_libvirtd(base, daemon["generation"])
    virtlogd.terminate()
    virtlogd.wait()
    return 0 if stopping else (code or 1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "ns":
        sys.exit("usage: libvirtd_ns.py ns BASE (inside unshare --mount)")
    sys.exit(_ns_main(sys.argv[2]))
