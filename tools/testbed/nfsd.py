"""Real NFS servers for the functional tests: nfs-ganesha in user space.

The kernel of the test machines has no nfsd; nfs-ganesha (FSAL VFS) serves a
directory of the test's temp dir.  Two set-ups:

- NFSv4 only, on 127.0.0.1 and a free port (ganesha's ``NFS_Port``; the
  client names it with libnfs's ``nfsport``), in the host's network
  namespace.  NFSv4 needs neither rpcbind nor mountd.
- NFSv3 + NFSv4 inside a private network namespace with its own rpcbind
  (NFSv3 cannot start without registering with one, and rpcbind binds
  0.0.0.0:111).  A placeholder process holds a new network and mount
  namespace; a veth pair with a private /30 joins it to the host; /run
  inside it is a private tmpfs, so rpcbind's /run/rpcbind.sock never
  touches (or talks to) the host's.  Everything dies with the placeholder.

Every process is started here and stopped by its PID (process.py).
Configs use ``Graceless = true`` (no 90 s grace period after start) and no
UDP.
"""

import glob
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time

import pytest

from cs2os_agent.transfer import libnfs
from tools.testbed import process

CONFIG = """NFS_CORE_PARAM {
    Bind_addr = %(bind)s;
    NFS_Port = %(nfs_port)d;
    MNT_Port = %(mnt_port)d;
    NLM_Port = %(nlm_port)d;
    Rquota_Port = %(rquota_port)d;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Mount_Path_Pseudo = true;
    Protocols = %(protocols)s;
    Plugins_Dir = "%(plugins)s";
}
NFS_KRB5 { Active_krb5 = false; }
NFSV4 {
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "%(recovery)s";
    Only_Numeric_Owners = true;
}
EXPORT_DEFAULTS { SecType = sys; }
EXPORT {
    Export_Id = 1;
    Path = "%(path)s";
    Pseudo = "%(pseudo)s";
    Protocols = %(protocols)s;
    Transports = TCP;
    Access_Type = RO;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
"""

HINT = "tools/install-deps.sh installs nfs-ganesha, libnfs and rpcbind"


def require(*programs):
    """Fail (never skip) when a program the NFS tests need is missing."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail("missing %s; %s" % (", ".join(missing), HINT),
                    pytrace=False)
    try:
        libnfs.load_libnfs()
    except Exception as exc:  # noqa: BLE001
        pytest.fail("libnfs cannot be loaded (%s); %s" % (exc, HINT),
                    pytrace=False)


def plugins_dir():
    found = glob.glob("/usr/lib/*/ganesha/libfsalvfs.so") + glob.glob(
        "/usr/lib*/ganesha/libfsalvfs.so")
    if not found:
        pytest.fail("nfs-ganesha's VFS FSAL (libfsalvfs.so) is missing; "
                    + HINT, pytrace=False)
    return os.path.dirname(found[0])


def _run(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Ganesha(process.Child):
    """One ganesha.nfsd exporting ``path`` as ``pseudo``."""

    def __init__(self, workdir, name, path, pseudo="/primary", bind=None,
                 nfs_port=None, protocols="4", prefix=()):
        self.dir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.dir, "recovery"))
        self.path, self.pseudo = path, pseudo
        self.bind = bind or "127.0.0.1"
        self.port = nfs_port or process.free_port()
        self.prefix = list(prefix)  # e.g. nsenter into a namespace
        self.log_file = os.path.join(self.dir, "ganesha.log")
        self.conf_file = os.path.join(self.dir, "ganesha.conf")
        # ganesha binds its other services even when disabled: give them
        # free ports too, so two servers never collide.
        free = process.free_port
        with open(self.conf_file, "w") as f:
            f.write(CONFIG % {
                "bind": self.bind, "nfs_port": self.port,
                "mnt_port": 20048 if "3" in protocols else free(),
                "nlm_port": free(), "rquota_port": free(),
                "protocols": protocols, "plugins": plugins_dir(),
                "recovery": os.path.join(self.dir, "recovery"),
                "path": path, "pseudo": pseudo,
            })
        self.proc = None

    def start(self, probe_host, probe_version, timeout=30):
        self.spawn(
            self.prefix + [
                "ganesha.nfsd", "-F", "-f", self.conf_file,
                "-L", self.log_file,
                "-p", os.path.join(self.dir, "ganesha.pid"),
                "-N", "NIV_EVENT"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        port = self.port if probe_host == "127.0.0.1" else 0
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "ganesha.nfsd exited with %s; see %s"
                    % (self.proc.returncode, self.log_file))
            if self._mounts(probe_host, probe_version, port):
                return self
            if time.monotonic() > deadline:
                raise AssertionError(
                    "ganesha.nfsd did not serve %s in %ds; see %s"
                    % (self.pseudo, timeout, self.log_file))
            time.sleep(0.2)

    def _mounts(self, host, version, port):
        # The agent's own client is the readiness probe: ready means a
        # real NFS mount of the export works.
        lib = libnfs.load_libnfs()
        ctx = lib.init_context()
        try:
            lib.configure(ctx, version, 5, None, None,
                          libnfs.port_args(port, 0))
            return lib.mount(ctx, host, self.pseudo) == 0
        finally:
            lib.destroy_context(ctx)

    def log(self):
        with open(self.log_file, errors="replace") as f:
            return f.read()


class PrivateNetwork:
    """A network + mount namespace reachable from the host over a veth."""

    def __init__(self, workdir, run_id):
        self.run_id = run_id
        self.host_if = "cs2n%sh" % run_id[:6]
        self.ns_if = "cs2n%sn" % run_id[:6]
        self.host_ip, self.ns_ip = self._pick_subnet()
        self.holder = None
        self.rpcbind = None

    @staticmethod
    def _pick_subnet():
        """A /30 in 10.231.0.0/16 that no host route overlaps."""
        routes = subprocess.run(
            ["ip", "-4", "-o", "route", "show", "table", "all"],
            capture_output=True, text=True, check=True).stdout.split()
        taken = []
        for word in routes:
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
        taken = [n for n in taken if n.prefixlen > 0]
        for _ in range(100):
            # A spread, not a secret (S311).
            octets = (random.randrange(256),  # noqa: S311
                      random.randrange(0, 256, 4))  # noqa: S311
            net = ipaddress.ip_network("10.231.%d.%d/30" % octets)
            if not any(net.overlaps(t) for t in taken):
                hosts = list(net.hosts())
                return str(hosts[0]), str(hosts[1])
        raise AssertionError("no free /30 in 10.231.0.0/16")

    def nsenter(self):
        """argv prefix that runs a program inside the namespaces."""
        return ["nsenter", "-t", str(self.holder.pid), "-n", "-m"]

    def start(self):
        self.holder = process.spawn(
            ["unshare", "--net", "--mount", "--propagation", "private",
             "sleep", "infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        # unshare execs sleep only after it has unshared: until then
        # entering "its" namespaces would enter the host's.
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while True:
            try:
                theirs = os.readlink("/proc/%d/ns/net" % self.holder.pid)
                with open("/proc/%d/comm" % self.holder.pid) as f:
                    comm = f.read().strip()
            except OSError:
                theirs, comm = ours, ""
            if theirs != ours and comm == "sleep":
                break
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("could not create a network namespace")
            time.sleep(0.05)
        pid = str(self.holder.pid)
        inside = ["nsenter", "-t", pid, "-n", "-m"]
        _run(*inside, "mount", "-t", "tmpfs", "-o", "mode=0755",
             "cs2os-ft-run", "/run")
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer",
             "name", self.ns_if, "netns", pid)
        _run("ip", "addr", "add", self.host_ip + "/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", self.ns_ip + "/30", "dev",
             self.ns_if)
        _run(*inside, "ip", "link", "set", self.ns_if, "up")
        # Without -w: no warm-start files, no stale registrations.
        self.rpcbind = process.spawn(
            inside + ["rpcbind", "-f"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self._wait_rpcbind()
        return self

    def _wait_rpcbind(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            if self.rpcbind.poll() is not None:
                raise AssertionError("rpcbind exited with %s"
                                     % self.rpcbind.returncode)
            try:
                socket.create_connection((self.ns_ip, 111), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("rpcbind did not start") from None
                time.sleep(0.1)

    def stop(self):
        process.stop(self.rpcbind)
        if self.holder is not None and self.holder.poll() is None:
            process.kill(self.holder)
        # The namespace and the veth end in it die with their last
        # process, which takes the host end along; make sure of it.
        if os.path.exists("/sys/class/net/%s" % self.host_if):
            subprocess.run(["ip", "link", "del", self.host_if],
                           capture_output=True, check=False)
