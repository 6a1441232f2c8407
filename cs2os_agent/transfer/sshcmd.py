"""The OpenSSH client command, shared by everything that runs ``ssh``.

Two parts of the agent log in to a CloudStack KVM host: the ``ssh``
transport (:mod:`cs2os_agent.transfer.ssh`) reads an overlay over it and
the warm migration's tunnel (:mod:`cs2os_agent.agent.mirror.tunnel`)
forwards the NBD export over it.  Both must connect the same way (same key,
same verified host key, same options) and explain a failure in the same
words, so the command line, the checks of what goes into it, and the
reading of ssh's own errors live here, apart from either user.

Security: the host key is always verified against ``[transfer]
ssh_known_hosts_file`` and never learned; the only credential is ``[transfer]
ssh_private_key_file`` (no agent, no password, no prompt); no ssh_config file
is read, so nothing outside cs2os's own configuration changes how the agent
connects.  The remote command is a string the remote user's login shell
parses (a POSIX shell: sh, bash, dash, zsh), so :func:`remote_command`
quotes every word, and host, port and user are validated before use.
"""

import dataclasses
import ipaddress
import os
import re
import shlex
import shutil
import stat
import subprocess

from cs2os_agent.common import exception

DEFAULT_PORT = 22
# How long a dead connection goes unnoticed by ssh itself: no answer to
# SERVER_ALIVE_COUNT keepalives SERVER_ALIVE_INTERVAL s apart ends it.
SERVER_ALIVE_INTERVAL = 15
SERVER_ALIVE_COUNT = 4
# Put the AES-GCM ciphers first, keep the default list behind them: with
# AES-NI they are ~2x faster than chacha20-poly1305 (measured: ~500 vs ~250
# MB/s for ``ssh cat`` on one machine), and a host without them still
# negotiates one of the defaults.
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
# ssh reports its own failures (connect, host key, auth) with this code.
SSH_FAILED = 255
# Characters ssh expands or splits in option values (%, ~, quotes,
# blanks) or that have no place in a file name we pass it.
_UNSAFE_OPTION_PATH = re.compile(r"[\s%~\"'\\\x00-\x1f\x7f]")
# Used with fullmatch: "$" alone would accept a trailing newline.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_STDERR_SHOWN = 600  # characters of remote stderr kept in an error


def _invalid(source, reason):
    return exception.InvalidSource(source=source, reason=reason)


def valid_host(host):
    """A host name or an IP address; nothing ssh could read as more."""
    if not isinstance(host, str) or not host:
        raise _invalid("ssh", "host must be a non-empty string")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and "%" not in host:
        return str(ip)
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
        raise _invalid(repr(host)[:80],
                       "host must be a DNS host name or an IP address")
    return host


def valid_port(port):
    # bool is an int in Python; True must not mean port 1.
    if isinstance(port, bool) or not isinstance(port, int) or not (
            1 <= port <= 65535):
        raise _invalid(repr(port)[:80],
                       "port must be an integer from 1 to 65535")
    return port


def valid_user(user):
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise _invalid(repr(user)[:80],
                       "user must be a user name ([A-Za-z_][A-Za-z0-9_.-]*, "
                       "at most 32 characters)")
    return user


def _option_path(option, path):
    """A client-side file ssh is told about; refuse what ssh would mangle."""
    if not path or not os.path.isabs(path) or _UNSAFE_OPTION_PATH.search(
            path):
        raise exception.SshClientConfigInvalid(
            option=option, path=path,
            reason="it must be an absolute path without blanks, quotes, "
            "'%' or '~' (ssh would expand or split them)")
    return path


@dataclasses.dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    path: str

    @property
    def netloc(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s@%s:%d" % (self.user, host, self.port)

    @property
    def known_hosts_entry(self):
        """How known_hosts (and ``ssh-keygen -R``) name this host."""
        if self.port == DEFAULT_PORT:
            return self.host
        return "[%s]:%d" % (self.host, self.port)


@dataclasses.dataclass(frozen=True)
class SshOptions:
    """The client side: one key, one known_hosts file, timeouts."""

    private_key_file: str
    known_hosts_file: str
    connect_timeout: int
    stall_timeout: int
    chunk_size: int

    @classmethod
    def from_conf(cls, conf):
        t = conf.transfer
        return cls(
            private_key_file=_option_path("ssh_private_key_file",
                                          t.ssh_private_key_file),
            known_hosts_file=_option_path("ssh_known_hosts_file",
                                          t.ssh_known_hosts_file),
            connect_timeout=t.ssh_connect_timeout,
            stall_timeout=t.stall_timeout,
            chunk_size=t.chunk_size_kib * 1024,
        )

    def check_key(self):
        """Say plainly what ssh would only report as an auth failure."""
        path = self.private_key_file
        if not os.path.isfile(path):
            raise exception.SshClientConfigInvalid(
                option="ssh_private_key_file", path=path,
                reason="no such file")
        if not os.access(path, os.R_OK):
            raise exception.SshClientConfigInvalid(
                option="ssh_private_key_file", path=path,
                reason="not readable by the agent's user")
        st = os.stat(path)
        # ssh ignores a key its owner let others read.
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            raise exception.SshClientConfigInvalid(
                option="ssh_private_key_file", path=path,
                reason="ssh refuses a private key others can read; "
                "chmod 600 %s" % shlex.quote(path))


def build_argv(target, options, remote_command):
    """The ssh command line; every option is set once, here.

    (ssh keeps the first value it sees for an option, so nothing after
    these could weaken them; there is nothing after them anyway.)
    """
    o = [
        # No ssh_config: neither /etc/ssh/ssh_config nor ~/.ssh/config can
        # turn host key checking off or add a proxy behind our back.
        "-F", "none",
        # Never prompt: no password, no passphrase, no "add this key?".
        "-o", "BatchMode=yes",
        # Verify the host key against our file only; never learn one.
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=%s" % options.known_hosts_file,
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no",
        "-o", "CheckHostIP=no",
        "-o", "VerifyHostKeyDNS=no",
        # Our key and nothing else: no ssh-agent, no default ~/.ssh keys.
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "PreferredAuthentications=publickey",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", "GSSAPIAuthentication=no",
        "-o", "HostbasedAuthentication=no",
        # A data pipe, nothing more.
        "-o", "ClearAllForwardings=yes",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "PermitLocalCommand=no",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "RequestTTY=no",
        # Fail fast on a dead host or a dead connection.
        "-o", "ConnectionAttempts=1",
        "-o", "ConnectTimeout=%d" % options.connect_timeout,
        "-o", "ServerAliveInterval=%d" % SERVER_ALIVE_INTERVAL,
        "-o", "ServerAliveCountMax=%d" % SERVER_ALIVE_COUNT,
        "-o", "Ciphers=%s" % CIPHERS,
        # Errors only: no login banner mixed into the stderr we parse.
        "-o", "LogLevel=ERROR",
        "-i", options.private_key_file,
        "-p", str(target.port),
        "-l", target.user,
        # "--": a host can never be read as an option (it is validated
        # too).  ssh joins the words after the host into one string that
        # the remote user's shell parses: remote_command is quoted.
        "--", target.host, remote_command,
    ]
    return ["ssh"] + o


def remote_command(*words):
    """One shell command line; C locale so errors parse the same anywhere."""
    return " ".join(["env", "LC_ALL=C"] + [shlex.quote(str(w))
                                          for w in words])


_UNREACHABLE = (
    "Connection refused", "Connection timed out", "timed out",
    "No route to host", "Network is unreachable", "Could not resolve",
    "Name or service not known", "Temporary failure in name resolution",
    "kex_exchange_identification", "Connection reset by peer",
    "Connection closed by",
)


def _last_lines(text, limit=_STDERR_SHOWN):
    text = " ".join(line.strip() for line in text.strip().splitlines()
                    if line.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


def ssh_error(target, options, stderr):
    """The exception for ssh's own failure (exit code 255)."""
    where = {"host": target.host, "port": target.port}
    keys = dict(where, known_hosts=options.known_hosts_file)
    if ("REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr
            or "has changed and you have requested strict" in stderr
            or "REVOKED HOST KEY" in stderr):
        return exception.SourceHostKeyChanged(
            entry=shlex.quote(target.known_hosts_entry), **keys)
    if "host key is known for" in stderr:
        return exception.SourceHostKeyUnknown(**keys)
    if "Host key verification failed" in stderr:
        return exception.SourceHostKeyRefused(reason=_last_lines(stderr),
                                              **keys)
    if "UNPROTECTED PRIVATE KEY FILE" in stderr or "Load key" in stderr:
        return exception.SshClientConfigInvalid(
            option="ssh_private_key_file", path=options.private_key_file,
            reason=_last_lines(stderr))
    if "Permission denied (" in stderr or "Too many authentication" in (
            stderr):
        return exception.SourceAuthFailed(
            user=target.user, reason=_last_lines(stderr), **where)
    if any(s in stderr for s in _UNREACHABLE):
        return exception.SourceUnreachable(reason=_last_lines(stderr),
                                           **where)
    # LogLevel=ERROR keeps "closed by remote host" (INFO) quiet.
    return exception.SourceSshError(
        reason=_last_lines(stderr) or "ssh exited with code 255: the "
        "connection failed or the host closed it", **where)


def command_error(target, options, command, returncode, stderr, shown):
    """The exception for a failed run; ``shown`` names the file."""
    if returncode == SSH_FAILED:
        return ssh_error(target, options, stderr)
    if "No such file or directory" in stderr or "Not a directory" in stderr:
        return exception.SourceNotFound(path=shown)
    if "Permission denied" in stderr:
        return exception.SourceUnreadable(path=shown,
                                          reason=_last_lines(stderr))
    if "Is a directory" in stderr:
        return _invalid(shown, "not a regular file")
    stderr = _last_lines(stderr) or "(no error message)"
    if returncode == 127:
        stderr += "; the host needs GNU coreutils (stat, realpath, head, " \
                  "tail, cat, dd)"
    return exception.SourceRemoteCommandFailed(
        command=command, host=target.host, port=target.port,
        exit_code=returncode, stderr=stderr)


def run(argv, timeout):
    """Run a short ssh command; (exit code, stdout bytes, stderr text)."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return None, b"", "no answer in %d s" % timeout
    return done.returncode, done.stdout, done.stderr.decode(
        errors="replace")


def require_client():
    """Say plainly that no ssh is installed, before any run."""
    if shutil.which("ssh") is None:
        raise exception.SshClientConfigInvalid(
            option="(ssh client)", path="ssh",
            reason="the OpenSSH client is not installed on this node "
            "(apt-get install openssh-client)")
