"""The OpenSSH client command: argv, its checked inputs, ssh's failures.

Host, port, user and the client's key files are checked when the ssh
transport makes a source, so those tests go through its factory; how the
failures of ssh and of the remote command read is tested on ``sshcmd``'s
functions.  No process runs (the unit conftest forbids it).
"""

import os

import pytest
from oslo_messaging._drivers import common as rpc_common

from cs2os_agent.common import exception
from cs2os_agent.common import rpc
from cs2os_agent.transfer import sshcmd
from tests.unit.transfer.helpers import PATH
from tests.unit.transfer.helpers import UNKNOWN
from tests.unit.transfer.helpers import MiB
from tests.unit.transfer.helpers import make

# -- argv ------------------------------------------------------------------


def test_argv_pins_every_security_option_once(conf):
    src = make(conf, port=2222, user="cloud")
    argv = src._argv("true")
    assert argv[0] == "ssh"
    assert argv[1:3] == ["-F", "none"]
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    names = [o.split("=", 1)[0] for o in opts]
    # ssh keeps the first value of an option: each appears exactly once.
    assert len(names) == len(set(names))
    key, known = (conf.transfer.ssh_private_key_file,
                  conf.transfer.ssh_known_hosts_file)
    for wanted in (
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=%s" % known,
        "GlobalKnownHostsFile=/dev/null",
        "UpdateHostKeys=no",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "ConnectTimeout=7",
        "ServerAliveInterval=15",
        "ControlMaster=no",
        "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com",
    ):
        assert wanted in opts, wanted
    assert argv[argv.index("-i") + 1] == key
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-l") + 1] == "cloud"
    # The host comes after "--" and the remote command is one last word.
    assert argv[-3:] == ["--", "kvm-01.example.org", "true"]


# -- refusals --------------------------------------------------------------


@pytest.mark.parametrize("host", [
    "", "-oProxyCommand=id", "root@kvm", "kvm 01", "kvm;id", "kvm\n",
    "fe80::1%eth0", "a" * 64 + ".org", "x." * 130 + "org", "kvm:22",
    "[::1]", 12, None,
])
def test_bad_host_refused(conf, host):
    with pytest.raises(exception.InvalidSource, match="host"):
        make(conf, host=host)


@pytest.mark.parametrize("host", [
    "kvm-01", "kvm-01.example.org", "10.1.2.3", "::1", "2001:db8::5",
    "KVM_2.lab.",
])
def test_good_host_accepted(conf, host):
    assert make(conf, host=host).target.host == host


@pytest.mark.parametrize("port", [0, 65536, -1, True, "22", 22.0, None])
def test_bad_port_refused(conf, port):
    with pytest.raises(exception.InvalidSource, match="port"):
        make(conf, port=port)


@pytest.mark.parametrize("user", [
    "-oProxyCommand=id", "a b", "root;id", "root@x", "9lives", "x" * 33,
    7,
])
def test_bad_user_refused(conf, user):
    with pytest.raises(exception.InvalidSource, match="user"):
        make(conf, user=user)


def test_configured_user_is_validated_too(conf):
    conf.transfer.ssh_user = "root -oProxyCommand=id"
    with pytest.raises(exception.InvalidSource, match="user"):
        make(conf)


def test_missing_key_file_named(conf, tmp_path):
    conf.transfer.ssh_private_key_file = str(tmp_path / "nope")
    with pytest.raises(exception.SshClientConfigInvalid,
                       match="ssh_private_key_file .*no such file"):
        make(conf)


def test_key_others_can_read_refused_with_the_fix(conf):
    os.chmod(conf.transfer.ssh_private_key_file, 0o644)
    with pytest.raises(exception.SshClientConfigInvalid, match="chmod 600"):
        make(conf)


@pytest.mark.parametrize("option", ["ssh_private_key_file",
                                    "ssh_known_hosts_file"])
@pytest.mark.parametrize("value", ["relative/key", "/etc/a b", "/etc/%h",
                                   "/etc/~x", "/etc/a'b"])
def test_client_paths_ssh_would_mangle_refused(conf, option, value):
    setattr(conf.transfer, option, value)
    with pytest.raises(exception.SshClientConfigInvalid, match=option):
        make(conf)


def test_missing_ssh_client_named(conf, monkeypatch):
    monkeypatch.setattr(sshcmd.shutil, "which", lambda name: None)
    with pytest.raises(exception.SshClientConfigInvalid,
                       match="openssh-client"):
        make(conf)


# -- ssh's own failures (exit code 255) ------------------------------------

CHANGED = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Offending ED25519 key in /tmp/x/wrong_known:1
Host key for [127.0.0.1]:36705 has changed and you have requested strict \
checking.
Host key verification failed.
"""
REFUSED = "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n"
AUTH = "root@127.0.0.1: Permission denied (publickey).\r\n"
LOOSE_KEY = """\
@         WARNING: UNPROTECTED PRIVATE KEY FILE!          @
Permissions 0644 for '/etc/cs2os/ssh/id_ed25519' are too open.
Load key "/etc/cs2os/ssh/id_ed25519": bad permissions
root@127.0.0.1: Permission denied (publickey).
"""


def target(port=2222, host="127.0.0.1", user="root"):
    return sshcmd.SshTarget(host, port, user, PATH)


def options():
    return sshcmd.SshOptions("/etc/cs2os/ssh/id_ed25519",
                             "/etc/cs2os/ssh/known_hosts", 10, 30, MiB)


def test_unknown_host_key_names_file_and_fix():
    exc = sshcmd.ssh_error(target(), options(), UNKNOWN)
    assert type(exc) is exception.SourceHostKeyUnknown
    assert isinstance(exc, exception.SourceHostKeyRefused)
    msg = str(exc)
    assert "127.0.0.1 port 2222" in msg
    assert ("ssh-keyscan -p 2222 127.0.0.1 >> /etc/cs2os/ssh/known_hosts"
            in msg)
    assert "out of band" in msg
    assert exc.code == 403


def test_changed_host_key_names_file_and_fix():
    exc = sshcmd.ssh_error(target(), options(), CHANGED)
    assert type(exc) is exception.SourceHostKeyChanged
    msg = str(exc)
    assert "does not match" in msg and "intercepting" in msg
    assert ("ssh-keygen -f /etc/cs2os/ssh/known_hosts -R '[127.0.0.1]:2222'"
            in msg)
    assert ("ssh-keyscan -p 2222 127.0.0.1 >> /etc/cs2os/ssh/known_hosts"
            in msg)


def test_changed_host_key_on_port_22_names_the_bare_host():
    exc = sshcmd.ssh_error(target(port=22, host="kvm-01"), options(), CHANGED)
    assert "-R kvm-01 " in str(exc)


def test_bare_host_key_failure_is_still_a_refusal():
    exc = sshcmd.ssh_error(target(), options(),
                           "Host key verification failed.\r\n")
    assert type(exc) is exception.SourceHostKeyRefused


@pytest.mark.parametrize("stderr", [
    REFUSED,
    "ssh: connect to host kvm port 22: Connection timed out\r\n",
    "ssh: connect to host 10.0.0.9 port 22: No route to host\r\n",
    "ssh: Could not resolve hostname kvm: Name or service not known\r\n",
    "kex_exchange_identification: read: Connection reset by peer\r\n",
    "Connection timed out during banner exchange\r\n",
])
def test_unreachable(stderr):
    exc = sshcmd.ssh_error(target(), options(), stderr)
    assert type(exc) is exception.SourceUnreachable
    assert "127.0.0.1 port 2222" in str(exc)
    assert exc.code == 503


def test_auth_failure_names_user_and_the_key_option():
    exc = sshcmd.ssh_error(target(user="cloud"), options(), AUTH)
    assert type(exc) is exception.SourceAuthFailed
    msg = str(exc)
    assert "as cloud to 127.0.0.1 port 2222" in msg
    assert "ssh_private_key_file" in msg and "authorized_keys" in msg


def test_key_ssh_ignored_is_a_config_error_not_an_auth_failure():
    exc = sshcmd.ssh_error(target(), options(), LOOSE_KEY)
    assert type(exc) is exception.SshClientConfigInvalid
    assert "bad permissions" in str(exc)


def test_silent_ssh_failure_still_says_what_happened():
    exc = sshcmd.ssh_error(target(), options(), "")
    assert type(exc) is exception.SourceSshError
    assert "code 255" in str(exc) and "127.0.0.1 port 2222" in str(exc)


def test_other_ssh_failure_keeps_its_words():
    exc = sshcmd.ssh_error(target(), options(),
                           "Timeout, server 127.0.0.1 not responding.\r\n")
    assert type(exc) is exception.SourceSshError
    assert "not responding" in str(exc)


# -- the remote command's failures -----------------------------------------


@pytest.mark.parametrize("rc, stderr, exc_type", [
    (1, "stat: cannot statx '/mnt/p/v': No such file or directory\n",
     exception.SourceNotFound),
    (1, "realpath: /mnt/p/v: No such file or directory\n",
     exception.SourceNotFound),
    (1, "stat: cannot statx '/mnt/p/v/x': Not a directory\n",
     exception.SourceNotFound),
    (1, "head: cannot open '/mnt/p/v' for reading: Permission denied\n",
     exception.SourceUnreadable),
    (1, "cat: /mnt/p/v: Is a directory\n", exception.InvalidSource),
    (1, "cat: /mnt/p/v: Input/output error\n",
     exception.SourceRemoteCommandFailed),
    (255, AUTH, exception.SourceAuthFailed),
])
def test_command_errors(rc, stderr, exc_type):
    exc = sshcmd.command_error(target(), options(), "cat", rc, stderr,
                               "ssh://root@127.0.0.1:2222/mnt/p/v")
    assert type(exc) is exc_type


def test_permission_denied_keeps_the_remote_words():
    exc = sshcmd.command_error(
        target(), options(), "head", 1,
        "head: cannot open '/mnt/p/v' for reading: Permission denied\n",
        "ssh://root@127.0.0.1:2222/mnt/p/v")
    assert "Permission denied" in str(exc)
    assert "ssh://root@127.0.0.1:2222/mnt/p/v" in str(exc)


def test_missing_coreutils_is_explained():
    exc = sshcmd.command_error(target(), options(), "stat", 127,
                               "bash: realpath: command not found\n", "x")
    assert type(exc) is exception.SourceRemoteCommandFailed
    assert "coreutils" in str(exc) and "exit code 127" in str(exc)


def test_long_stderr_is_cut():
    exc = sshcmd.command_error(target(), options(), "cat", 1, "x" * 10000, "s")
    assert len(str(exc)) < 1000


@pytest.mark.parametrize("cls, kwargs", [
    (exception.SourceHostKeyUnknown,
     {"host": "h", "port": 22, "known_hosts": "/k"}),
    (exception.SourceHostKeyChanged,
     {"host": "h", "port": 22, "known_hosts": "/k", "entry": "h"}),
    (exception.SourceUnreachable, {"host": "h", "port": 22, "reason": "r"}),
    (exception.SourceAuthFailed,
     {"host": "h", "port": 22, "user": "u", "reason": "r"}),
    (exception.RemoteSourceNotAllowed, {"path": "/x", "roots": "/mnt"}),
])
def test_new_errors_survive_rpc(cls, kwargs):
    original = cls(**kwargs)
    wire = rpc_common.serialize_remote_exception(
        (cls, original, None))
    received = rpc_common.deserialize_remote_exception(
        wire, rpc.ALLOWED_EXMODS)
    assert isinstance(received, cls)
    assert str(original) in str(received)
