"""A real OpenSSH server on 127.0.0.1 for the ssh transport's tests.

Modelled on ovirt-imageio's ``qemu_nbd.Server``: ``start()`` runs Debian's
``/usr/sbin/sshd -D -e`` (foreground, logs to a file) on a free random port
with a fresh host key and a fresh client key made in a directory of its
own, waits until the server answers with its SSH banner, and ``stop()``
ends it by its PID.  Login is key-only, for root and for one unprivileged
user (:data:`TEST_USER`, used to prove a "Permission denied" on a file).

Nothing else is touched, with two exceptions said here: sshd refuses to
start without its privilege separation directory ``/run/sshd``, which is
created if missing (and left, as Debian's own sshd would); and
:data:`TEST_USER` is created once with ``useradd`` if it does not exist (a
system account with no password and no home, kept for later runs).
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from tools.testbed import process

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"
# An unprivileged account that can log in to the test sshd only (sshd's
# AllowUsers and our authorized_keys); it owns nothing.
TEST_USER = "cs2os-test"
BANNER = b"SSH-2.0-"


class HarnessError(Exception):
    """The test sshd cannot run here; the message says why."""


def require_binaries():
    missing = [b for b in (SSHD, "ssh", "ssh-keygen")
               if shutil.which(b) is None]
    if missing:
        raise HarnessError(
            "missing %s; install them with: apt-get install openssh-server "
            "openssh-client (tools/install-deps.sh)" % ", ".join(missing))


def ensure_test_user():
    """Create :data:`TEST_USER` if needed; idempotent."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    # '*' is "no password" without being the '!' that sshd (UsePAM no)
    # reads as a locked account; / as home so the login has a cwd.
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/",
         "--shell", "/bin/sh", "--password", "*", TEST_USER],
        capture_output=True, text=True, check=False)
    if done.returncode not in (0, 9):  # 9: created meanwhile by another run
        raise HarnessError("useradd %s failed: %s"
                           % (TEST_USER, done.stderr.strip()))
    return pwd.getpwnam(TEST_USER)


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                    os.path.basename(path), "-f", path],
                   check=True, capture_output=True)
    with open(path + ".pub") as f:
        key_type, key = f.read().split()[:2]
    return "%s %s" % (key_type, key)


CONFIG = """\
ListenAddress 127.0.0.1:%(port)d
HostKey %(dir)s/host_ed25519
PidFile none
AuthorizedKeysFile %(dir)s/authorized_keys
AllowUsers root %(test_user)s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The run directory lives under /var/tmp (mode 1777), which StrictModes
# would reject for the test user's authorized_keys.
StrictModes no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
LogLevel VERBOSE
"""


class Server(process.Child):
    """One private sshd; ``with Server(dir) as s:`` starts and stops it."""

    def __init__(self, parent_dir):
        self.parent_dir = parent_dir
        self.dir = None
        self.port = None
        self.proc = None
        self.host = "127.0.0.1"

    # -- files the tests hand to the agent ---------------------------------

    @property
    def client_key(self):
        return os.path.join(self.dir, "client_ed25519")

    @property
    def known_hosts(self):
        """The server's real host key."""
        return os.path.join(self.dir, "known_hosts")

    @property
    def wrong_known_hosts(self):
        """Another key under this server's name: a changed host key."""
        return os.path.join(self.dir, "known_hosts.wrong")

    @property
    def other_known_hosts(self):
        """Keys of other hosts only: this server's key is unknown."""
        return os.path.join(self.dir, "known_hosts.other")

    @property
    def log_file(self):
        return os.path.join(self.dir, "sshd.log")

    @property
    def entry(self):
        return "[%s]:%d" % (self.host, self.port)

    # -- life cycle ----------------------------------------------------------

    def start(self, timeout=15, attempts=5):
        require_binaries()
        ensure_test_user()
        if not os.path.isdir(PRIVSEP_DIR):
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="sshd-", dir=self.parent_dir)
        # Traversable by TEST_USER: sshd reads authorized_keys as the user.
        os.chmod(self.dir, 0o755)  # noqa: S103
        host_key = _keygen(os.path.join(self.dir, "host_ed25519"))
        client_key = _keygen(self.client_key)
        wrong_key = _keygen(os.path.join(self.dir, "not_the_host_key"))
        authorized = os.path.join(self.dir, "authorized_keys")
        with open(authorized, "w") as f:
            f.write(client_key + "\n")
        os.chmod(authorized, 0o644)
        # A free port can be taken between our probe and sshd's bind: retry.
        for _ in range(attempts):
            self.port = process.free_port()
            self._write_config()
            if self._run(timeout):
                break
        else:
            raise HarnessError("sshd did not start; see %s" % self.log_file)
        self._write_known_hosts(host_key, wrong_key)
        return self

    def _config_text(self):
        return CONFIG % {"port": self.port, "dir": self.dir,
                         "test_user": TEST_USER}

    def _write_config(self):
        path = os.path.join(self.dir, "sshd_config")
        with open(path, "w") as f:
            f.write(self._config_text())
        check = subprocess.run([SSHD, "-t", "-f", path], capture_output=True,
                               text=True, check=False)
        if check.returncode != 0:
            raise HarnessError("sshd rejects its config %s: %s"
                               % (path, check.stderr.strip()))
        self.config = path

    def _run(self, timeout):
        """Start sshd; True once it answers, False if it exited."""
        with open(self.log_file, "ab") as log:
            self.spawn(
                [SSHD, "-D", "-e", "-f", self.config],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # most likely the port was taken
            if self._banner():
                return True
            time.sleep(0.05)
        self.stop()
        raise HarnessError("sshd on port %d did not answer in %d s; see %s"
                           % (self.port, timeout, self.log_file))

    def _banner(self):
        try:
            with socket.create_connection((self.host, self.port),
                                          timeout=1) as s:
                return s.recv(256).startswith(BANNER)
        except OSError:
            return False

    def _write_known_hosts(self, host_key, wrong_key):
        for path, line in (
            (self.known_hosts, "%s %s\n" % (self.entry, host_key)),
            (self.wrong_known_hosts, "%s %s\n" % (self.entry, wrong_key)),
            (self.other_known_hosts, "[%s]:%d %s\n"
             % (self.host, process.free_port(), host_key)),
        ):
            with open(path, "w") as f:
                f.write(line)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # -- helpers for tests ---------------------------------------------------

    def log(self):
        with open(self.log_file, errors="replace") as f:
            return f.read()

    def client_processes(self):
        """PIDs of ssh clients using this server's files (agent's or ours).

        Every ssh the agent runs names our known_hosts file on its command
        line, so a lingering one is found whatever its parent.
        """
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if argv and os.path.basename(argv[0]) == b"ssh" and any(
                    self.dir.encode() in a for a in argv):
                pids.append(int(name))
        return pids


class ForwardingServer(Server):
    """The test sshd, with remote forwarding allowed: a KVM host's sshd.

    OpenSSH checks AllowTcpForwarding for unix socket forwards too, and the
    shared test server turns it off; a CloudStack KVM host's sshd has
    Debian's/EL's default (yes).  ``remote``: only what the mirror
    tunnel's ``-R`` needs.
    """

    def _config_text(self):
        config = super()._config_text().replace(
            "AllowTcpForwarding no", "AllowTcpForwarding remote")
        assert "AllowTcpForwarding remote" in config
        return config
