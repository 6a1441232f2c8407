"""The SSH tunnel that lets the source QEMU reach the agent's NBD export.

Direction: the agent opens it, so it is a *reverse* forward,
``ssh -R <socket on the KVM host>:<agent's NBD socket> host``.  The
recipe's ``ssh -L`` ran on the KVM host into an sshd on the target; done
that way round, every CloudStack host would need a key for, and a route
to, an sshd on every compute node, and a process on the CloudStack side
that nothing on our side starts, watches or stops.  With ``-R`` the agent
uses the outbound SSH it already has for the ``ssh`` transport (same key,
same known_hosts file, same verified host key, no new port opened on either
cloud), and the tunnel's life is a child process of the agent.

The KVM host's sshd must allow remote forwarding (``AllowTcpForwarding
yes`` or ``remote``, the default: OpenSSH checks that option for unix
socket forwards too, and ``AllowStreamLocalForwarding``, also on by
default).  sshd creates the remote socket as the login user with mode 0600
(``StreamLocalBindMask``); the source QEMU runs as its own user
(libvirt-qemu on Debian) and would get EACCES (recipe finding), so the
tunnel's remote command hands the socket to QEMU's uid:gid (read from the
domain's DAC label, :func:`cs2os_agent.sourcehost.blockcopy.qemu_owner`); that
needs root on the host, which is how CloudStack manages its KVM hosts.

The remote command also says when the forward is up: sshd handles the
forwarding request before it runs the session's command, and with
``ExitOnForwardFailure`` a refused forward ends ssh before any output; so
the line ``ready`` proves the socket exists.  The command then waits on
stdin, so closing our end of it ends the session, and removes the socket.
"""

import dataclasses
import os
import re
import secrets
import select
import signal
import subprocess
import time

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.transfer import sshcmd

LOG = logging.getLogger(__name__)

READY = b"ready\n"
# Characters ssh's -R parser or the remote shell would treat specially in
# a socket path ('[' ']' ':' split forward specs), beyond sshcmd.py's list.
_UNSAFE_SOCKET_PATH = re.compile(r"[\s%~\"'\\:\[\]\x00-\x1f\x7f]")
_OWNER = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")
_SUN_PATH_MAX = 107
_STDERR_SHOWN = 600


def _socket_path(what, path):
    if (not isinstance(path, str) or not path.startswith("/")
            or _UNSAFE_SOCKET_PATH.search(path)
            or os.path.normpath(path) != path
            or len(path.encode()) > _SUN_PATH_MAX):
        raise exception.Invalid(
            reason="%s %r must be a normalised absolute path of at most %d "
            "bytes without blanks, quotes, ':', '[', ']', '%%' or '~'"
            % (what, path, _SUN_PATH_MAX))
    return path


def valid_owner(owner):
    """``uid:gid``, numeric: what ``chown`` gets on the remote host."""
    if owner is not None and (not isinstance(owner, str)
                              or not _OWNER.fullmatch(owner)):
        raise exception.Invalid(
            reason="socket owner %r must be numeric uid:gid" % (owner,))
    return owner


def remote_socket_path(directory, token=None):
    """A fresh, unguessable socket name in ``directory`` on the KVM host.

    sshd refuses to bind over an existing file (StreamLocalBindUnlink is
    off by default), so a name someone placed there first fails the tunnel
    instead of being used.
    """
    token = token or secrets.token_hex(8)
    return _socket_path("remote socket",
                        os.path.join(directory, "cs2os-nbd-%s.sock" % token))


def remote_script(remote_socket, owner=None):
    """The session's command: check, hand over, say ready, wait, clean up."""
    steps = [sshcmd.remote_command("test", "-S", remote_socket)]
    if owner is not None:
        steps.append(sshcmd.remote_command("chown", owner, "--",
                                           remote_socket))
    steps += [
        sshcmd.remote_command("echo", "ready"),
        # Waits until the agent closes the tunnel (or the connection
        # breaks: cat sees end of file either way).
        sshcmd.remote_command("cat") + " >/dev/null",
    ]
    return "%s ; %s" % (" && ".join(steps), sshcmd.remote_command(
        "rm", "-f", "--", remote_socket))


def build_argv(target, options, local_socket, remote_socket, owner=None):
    """sshcmd.build_argv's command line, plus exactly one reverse forward.

    Every host key and authentication option comes from the ssh transport
    unchanged; only ``ClearAllForwardings=yes`` goes (it would clear the
    forward given here too), and ExitOnForwardFailure makes a refused
    forward fatal.
    """
    argv = sshcmd.build_argv(target, options,
                             remote_script(remote_socket, owner))
    clear = argv.index("ClearAllForwardings=yes")
    if argv[clear - 1] != "-o" or argv[-3] != "--":
        raise AssertionError("unexpected ssh command line layout: %r"
                             % (argv,))
    del argv[clear - 1:clear + 1]
    forward = [
        "-o", "ExitOnForwardFailure=yes",
        "-o", "StreamLocalBindUnlink=no",
        "-R", "%s:%s" % (remote_socket, local_socket),
    ]
    return argv[:-3] + forward + argv[-3:]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where the source host reaches the export."""

    host: str
    port: int
    user: str


class ReverseTunnel:
    """``ssh -R remote_socket:local_socket`` to a CloudStack KVM host."""

    def __init__(self, endpoint, options, local_socket, remote_socket,
                 owner=None, log_file=None, ready_timeout=None):
        self.endpoint = endpoint
        self.options = options
        self.local_socket = _socket_path("local socket", local_socket)
        self.remote_socket = _socket_path("remote socket", remote_socket)
        self.owner = valid_owner(owner)
        self.log_file = log_file
        self.ready_timeout = ready_timeout or (
            options.connect_timeout + 20)
        self.proc = None
        self._log = None
        self._target = sshcmd.SshTarget(
            host=sshcmd.valid_host(endpoint.host),
            port=sshcmd.valid_port(endpoint.port),
            user=sshcmd.valid_user(endpoint.user),
            path=self.remote_socket)

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def describe(self):
        return "ssh -R %s:%s %s" % (self.remote_socket, self.local_socket,
                                    self._target.netloc)

    def argv(self):
        return build_argv(self._target, self.options, self.local_socket,
                          self.remote_socket, self.owner)

    def start(self):
        """Open the tunnel; return once the remote socket accepts."""
        argv = self.argv()
        # The key's path is on it, never its content.
        LOG.debug("Opening tunnel: %s", " ".join(argv))
        self._log = open(self.log_file or os.devnull, "ab")
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._log, start_new_session=True)
        except OSError as exc:
            self._log.close()
            raise mirror_errors.MirrorTunnelFailed(
                host=self.endpoint.host, port=self.endpoint.port,
                reason="cannot run ssh: %s" % exc) from None
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        LOG.info("Tunnel %s open in %.2f s (pid %d)", self.describe(),
                 time.monotonic() - started, self.pid)
        return self.remote_socket

    def _wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        got = b""
        fd = self.proc.stdout.fileno()
        while not got.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise mirror_errors.MirrorTunnelFailed(
                    host=self.endpoint.host, port=self.endpoint.port,
                    reason="no answer within %d s" % self.ready_timeout)
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 64)
                if not chunk:
                    break  # ssh or the remote command ended
                got += chunk
        if got != READY:
            try:
                returncode = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                returncode = None
            raise self._error(returncode, what=got)

    def stderr(self):
        if not self.log_file:
            return ""
        try:
            with open(self.log_file, errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        text = " ".join(x.strip() for x in text.splitlines() if x.strip())
        return text if len(text) <= _STDERR_SHOWN else (
            "..." + text[-_STDERR_SHOWN:])

    def _error(self, returncode, what=b""):
        stderr = self.stderr()
        if returncode == sshcmd.SSH_FAILED and stderr:
            # Host key unknown or changed, login refused, unreachable: the
            # ssh transport's own words (and the command that fixes it).
            err = sshcmd.ssh_error(self._target, self.options, stderr)
            if not isinstance(err, exception.SourceSshError):
                return err
        reason = stderr or "(no message)"
        if "forward" in stderr:
            reason += ("; the host's sshd must allow remote forwarding "
                       "(AllowTcpForwarding yes or remote)")
        if what:
            reason += "; remote output %r" % what[:100]
        return mirror_errors.MirrorTunnelFailed(
            host=self.endpoint.host, port=self.endpoint.port,
            reason="ssh ended (%s): %s" % (
                "running" if returncode is None
                else "exit code %d" % returncode, reason))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check(self):
        """Raise MirrorTunnelDied if the tunnel is gone."""
        if self.proc is None:
            raise mirror_errors.MirrorTunnelFailed(
                host=self.endpoint.host, port=self.endpoint.port,
                reason="not opened")
        returncode = self.proc.poll()
        if returncode is not None:
            raise mirror_errors.MirrorTunnelDied(
                host=self.endpoint.host, port=self.endpoint.port,
                status=("killed by signal %d" % -returncode
                        if returncode < 0 else "exit code %d" % returncode),
                reason=self.stderr() or "(no message)")

    def close(self, grace=5.0):
        """End the session (the remote side removes its socket)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # remote cat sees end of file
            except OSError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                LOG.warning("Tunnel %s did not end in %.0f s; "
                            "terminating it", self.describe(), grace)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.kill()
        self._release()

    def kill(self):
        """SIGKILL the ssh client (by its PID)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._release()

    def _release(self):
        for f in (self.proc.stdin if self.proc else None,
                  self.proc.stdout if self.proc else None, self._log):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
