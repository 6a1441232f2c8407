"""The ssh transport without ssh: argv, validation, error mapping, copy.

No process runs here (the unit conftest forbids it): the one function that
runs a short ssh command (``sshcmd.run``) and the stream process are
replaced by fakes fed from real pipes.
"""

import os
import shlex
import threading
import types

import pytest
from oslo_messaging._drivers import common as rpc_common

from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.common import rpc
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import ssh
from cs2os_agent.transfer import sshcmd
from cs2os_agent.transfer import stream

MiB = 1024 * 1024
ROOTS = ["/mnt"]
PATH = "/mnt/0a1b-pool/3c4d-volume"
REAL = "/mnt/0a1b-pool/3c4d-volume"


@pytest.fixture
def keyfiles(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key; never read by these tests\n")
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text("")
    return str(key), str(known)


@pytest.fixture
def conf(keyfiles):
    key, known = keyfiles
    return types.SimpleNamespace(transfer=types.SimpleNamespace(
        ssh_private_key_file=key,
        ssh_known_hosts_file=known,
        ssh_user="root",
        ssh_connect_timeout=7,
        remote_source_roots=list(ROOTS),
        stall_timeout=30,
        chunk_size_kib=1024,
    ))


def request(**kw):
    source = {"transport": "ssh", "host": "kvm-01.example.org",
              "path": PATH}
    source.update(kw)
    return source


def make(conf, **kw):
    return transfer.get_source(request(**kw), conf)


# -- argv ---------------------------------------------------------------


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


def test_user_and_port_default(conf):
    src = make(conf)
    assert (src.target.user, src.target.port) == ("root", 22)
    assert src.describe() == "ssh://root@kvm-01.example.org:22" + PATH


def test_ipv6_host_is_shown_in_brackets(conf):
    src = make(conf, host="::1", port=2222)
    assert src.describe() == "ssh://root@[::1]:2222" + PATH
    assert src.target.known_hosts_entry == "[::1]:2222"


SHELL_SYNTAX = [
    "/mnt/pool/vol with space",
    "/mnt/pool/it's",
    "/mnt/pool/$(reboot)",
    "/mnt/pool/`id`;rm -rf /",
    "/mnt/pool/a\"b*c?",
]


def words(command):
    return ["env", "LC_ALL=C"] + command


@pytest.mark.parametrize("path", SHELL_SYNTAX)
def test_remote_commands_quote_every_word(path):
    stat = words(["stat", "-L", "-c", "%f %s %.9Y %i", "--", path])
    assert shlex.split(ssh.head_command(path, 512)) == words(
        ["head", "-c", "512", "--", path])
    # A POSIX shell parses these: each path is exactly one word.
    assert shlex.split(ssh.copy_command(path, 0)) == (
        words(["cat", "--", path]) + ["&&"] + stat + [">&2"])
    assert shlex.split(ssh.copy_command(path, 4096)) == (
        words(["tail", "-c", "+4097", "--", path]) + ["&&"] + stat
        + [">&2"])
    probe = shlex.split(ssh.probe_command(path, 1024))
    assert probe[:len(stat) + 1] == stat + ["&&"]
    rest = probe[len(stat) + 1:]
    assert rest[:8] == words(["realpath", "-z", "-e", "--", path]) + ["&&"]
    # r=$(...) then [ "$r" = PATH ]: the path inside $() is one quoted word
    # (shlex does not know $(), so it glues ")" to that word).
    assert rest[8:14] == ["r=$(env", "LC_ALL=C", "realpath", "-e", "--",
                          path + ")"]
    assert rest[14:] == ["&&", "if", "[", "$r", "=", path, "]", "&&", "[",
                         "-f", path, "]", ";", "then"] + words(
        ["head", "-c", "1024", "--", path]) + [";", "fi"]


# -- refusals -----------------------------------------------------------


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


@pytest.mark.parametrize("path, reason", [
    ("mnt/pool/vol", "absolute"),
    ("/mnt/../etc/shadow", "normalised"),
    ("/mnt/pool/./vol", "normalised"),
    ("/mnt//pool/vol", "normalised"),
    ("//mnt/pool/vol", "normalised"),
    ("/mnt/pool/vol/", "normalised"),
    ("/mnt/pool/vol\n", "control"),
    ("/mnt/pool/v\0l", "control"),
    ("", "non-empty"),
    ("/mnt/" + "x" * 5000, "too long"),
])
def test_bad_path_refused(conf, path, reason):
    with pytest.raises(exception.InvalidSource, match=reason):
        make(conf, path=path)


@pytest.mark.parametrize("path", ["/etc/shadow", "/mnt2/pool/vol", "/",
                                  "/mn"])
def test_path_outside_roots_refused(conf, path):
    with pytest.raises(exception.RemoteSourceNotAllowed) as err:
        make(conf, path=path)
    assert "[transfer] remote_source_roots" in str(err.value)
    assert isinstance(err.value, exception.SourceNotAllowed)


def test_no_roots_refuses_everything(conf):
    conf.transfer.remote_source_roots = []
    with pytest.raises(exception.RemoteSourceNotAllowed,
                       match="none configured"):
        make(conf)


def test_unknown_request_key_refused(conf):
    with pytest.raises(exception.InvalidSource, match="unknown password"):
        make(conf, password="x")  # noqa: S106 - the point of the test


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


# -- ssh's own failures (exit code 255) ----------------------------------

UNKNOWN = (
    "No ED25519 host key is known for [127.0.0.1]:36705 and you have "
    "requested strict checking.\r\nHost key verification failed.\r\n")
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


# -- the remote command's failures ---------------------------------------


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


# -- remote calls, with ssh replaced ----------------------------------------

STAT_LINE = "81a4 1048576 1700000000.123456789 4242"
HEADER = b"QFI\xfb" + b"h" * 60


def probe_out(stat_line=STAT_LINE, real=REAL, header=HEADER):
    return (stat_line.encode() + b"\n" + real.encode() + b"\0" + header)


STAT_OUT = probe_out()


class FakeRun:
    """Stands in for sshcmd.run: answers by remote command name."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, timeout):
        command = argv[-1]
        self.calls.append(command)
        name = shlex.split(command)[2]
        answer = self.answers[name]
        if callable(answer):
            answer = answer()
        return answer


@pytest.fixture
def fake_run(monkeypatch):
    def install(**answers):
        fake = FakeRun(answers)
        monkeypatch.setattr(sshcmd, "run", fake)
        return fake
    return install


def test_first_call_brings_stat_path_and_header(conf, fake_run):
    fake = fake_run(stat=(0, STAT_OUT, ""))
    src = make(conf, port=2222)
    assert src.fingerprint() == {
        "transport": "ssh", "host": "kvm-01.example.org", "port": 2222,
        "path": REAL, "size": MiB, "mtime": "1700000000.123456789",
        "inode": 4242,
    }
    assert src.read_header(4) == b"QFI\xfb"
    assert src.read_header(len(HEADER)) == HEADER
    assert src.size() == MiB
    assert src.bytes_to_copy(MiB // 4) == 3 * MiB // 4
    assert src.bytes_to_copy(2 * MiB) == 0
    # Later fingerprints answer from the first call: the copy re-checks.
    assert src.fingerprint()["mtime"] == "1700000000.123456789"
    assert len(fake.calls) == 1


def test_header_longer_than_prefetched_is_asked_for(conf, fake_run):
    fake = fake_run(stat=(0, STAT_OUT, ""), head=(0, b"H" * 100, ""))
    src = make(conf)
    assert src.read_header(100) == b"H" * 100
    assert shlex.split(fake.calls[-1])[2:] == ["head", "-c", "100", "--",
                                               REAL]


def test_short_file_is_whole_in_the_prefetch(conf, fake_run):
    fake = fake_run(stat=(0, probe_out("81a4 4 1.0 7", header=b"QFI\xfb"),
                          ""))
    assert make(conf).read_header(2 * MiB) == b"QFI\xfb"
    assert len(fake.calls) == 1


def test_through_a_symlink_reads_go_to_the_real_path(conf, fake_run):
    real = "/mnt/other-pool/vol"
    fake = fake_run(
        stat=(0, probe_out("81a4 10 1.000000000 7", real=real, header=b""),
              ""),
        head=(0, b"QFI\xfb", ""),
    )
    src = make(conf)
    assert src.read_header(4) == b"QFI\xfb"
    assert shlex.split(fake.calls[-1])[-1] == real


def test_symlink_out_of_roots_refused(conf, fake_run):
    fake_run(stat=(0, probe_out("81a4 10 1.0 7", real="/etc/shadow",
                                header=b""), ""))
    with pytest.raises(exception.RemoteSourceNotAllowed,
                       match="really /etc/shadow"):
        make(conf).fingerprint()


def test_not_a_regular_file_refused(conf, fake_run):
    fake_run(stat=(0, probe_out("41ed 4096 1.0 7", real="/mnt/pool",
                                header=b""), ""))
    with pytest.raises(exception.InvalidSource, match="not a regular file"):
        make(conf).fingerprint()


@pytest.mark.parametrize("out", [b"hello\n", b"", STAT_OUT.replace(
    b"\0", b"\n"), b"81a4 x 1.0 7\n/mnt/p/v\0"])
def test_garbage_from_the_probe_is_an_error(conf, fake_run, out):
    fake_run(stat=(0, out, ""))
    with pytest.raises(exception.SourceSshError, match="unexpected answer"):
        make(conf).fingerprint()


def test_timeout_is_an_error(conf, fake_run):
    fake_run(stat=(None, b"", "no answer in 37 s"))
    with pytest.raises(exception.SourceSshError, match="no answer in 37 s"):
        make(conf).fingerprint()


def test_host_key_failure_surfaces_from_fingerprint(conf, fake_run):
    fake_run(stat=(255, b"", UNKNOWN))
    with pytest.raises(exception.SourceHostKeyUnknown):
        make(conf).fingerprint()


class FakeStream:
    """A StreamProcess whose 'process' is a thread writing into a pipe.

    Like the real copy command it reports the file's stat on stderr at the
    end (``stderr``), unless told otherwise.
    """

    def __init__(self, data, returncode=0, stderr=STAT_LINE + "\n"):
        self.data, self.returncode, self._stderr = data, returncode, stderr

    def __call__(self, argv, describe, env=None):
        self.argv, self.describe = argv, describe
        r, w = os.pipe()
        self.proc = types.SimpleNamespace(
            stdout=os.fdopen(r, "rb", buffering=0),
            wait=lambda timeout=None: self.returncode,
            poll=lambda: self.returncode,
        )
        self.stopped = self.closed = False

        def feed():
            with os.fdopen(w, "wb") as f:
                try:
                    f.write(self.data)
                except BrokenPipeError:
                    pass
        self._thread = threading.Thread(target=feed, daemon=True)
        self._thread.start()
        return self

    def stderr(self):
        return self._stderr

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True
        self.proc.stdout.close()
        self._thread.join(5)


def copy(src, tmp_path, offset=0):
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", src.fingerprint(),
                                    64 * MiB)
    if offset:
        with open(dst, "wb") as f:
            f.write(b"\0" * offset)
    part.open(offset)
    mon = transfer_monitor.TransferMonitor("m", "s",
                                           src.bytes_to_copy(offset))
    try:
        moved = src.copy_to(part, mon, offset)
        part.finish(src.size())
    finally:
        part.close()
    return moved, mon, dst


@pytest.fixture
def streamed(monkeypatch):
    def install(fake):
        monkeypatch.setattr(ssh.stream, "StreamProcess", fake)
        return fake
    return install


def test_copy_moves_exactly_the_file(conf, fake_run, streamed, tmp_path):
    data = os.urandom(MiB)
    fake = fake_run(stat=(0, STAT_OUT, ""))
    stream_ = streamed(FakeStream(data))
    moved, mon, dst = copy(make(conf), tmp_path)
    assert moved == mon.done == MiB
    assert open(dst, "rb").read() == data
    assert shlex.split(stream_.argv[-1]) == (
        words(["cat", "--", REAL]) + ["&&"]
        + words(["stat", "-L", "-c", "%f %s %.9Y %i", "--", REAL])
        + [">&2"])
    assert stream_.closed
    # Two connections in all: the probe and the copy.
    assert len(fake.calls) == 1


def test_copy_resumes_with_tail(conf, fake_run, streamed, tmp_path):
    data = os.urandom(MiB)
    fake_run(stat=(0, STAT_OUT, ""))
    stream_ = streamed(FakeStream(data[4096:]))
    moved, _, dst = copy(make(conf), tmp_path, offset=4096)
    assert moved == MiB - 4096
    assert open(dst, "rb").read()[4096:] == data[4096:]
    assert shlex.split(stream_.argv[-1])[2:7] == ["tail", "-c", "+4097",
                                                  "--", REAL]


def test_short_stream_is_not_a_finished_copy(conf, fake_run, streamed,
                                             tmp_path):
    fake_run(stat=(0, STAT_OUT, ""))
    streamed(FakeStream(b"x" * (MiB - 1)))
    with pytest.raises(exception.TransferFailed, match="1048575 bytes "
                       "arrived, 1048576 expected"):
        copy(make(conf), tmp_path)


@pytest.mark.parametrize("stderr", [
    "81a4 1048576 1700000001.000000000 4242\n",  # written to meanwhile
    "81a4 1048576 1700000000.123456789 4243\n",  # replaced meanwhile
    "",  # no stat: cannot tell
    "81a4 1048576 1700000000.123456789 4242 junk\n",
])
def test_file_changed_during_copy(conf, fake_run, streamed, tmp_path,
                                  stderr):
    fake_run(stat=(0, STAT_OUT, ""))
    streamed(FakeStream(b"y" * MiB, stderr=stderr))
    with pytest.raises(exception.TransferFailed, match="changed during"):
        copy(make(conf), tmp_path)


def test_noise_before_the_final_stat_is_ignored(conf, fake_run, streamed,
                                                tmp_path):
    fake_run(stat=(0, STAT_OUT, ""))
    streamed(FakeStream(b"y" * MiB, stderr="Could not chdir to home "
                        "directory /x: No such file or directory\n"
                        + STAT_LINE + "\n"))
    assert copy(make(conf), tmp_path)[0] == MiB


def test_remote_failure_during_copy_is_typed(conf, fake_run, streamed,
                                             tmp_path):
    fake_run(stat=(0, STAT_OUT, ""))
    streamed(FakeStream(b"", returncode=1,
                        stderr="cat: /mnt/p/v: Permission denied"))
    with pytest.raises(exception.SourceUnreadable):
        copy(make(conf), tmp_path)


def test_connection_lost_during_copy(conf, fake_run, streamed, tmp_path):
    fake_run(stat=(0, STAT_OUT, ""))
    streamed(FakeStream(b"z" * 1000, returncode=255,
                        stderr="Connection to 127.0.0.1 closed by remote "
                        "host."))
    with pytest.raises(exception.SourceSshError, match="closed by remote"):
        copy(make(conf), tmp_path)


def test_cancel_stops_the_stream(conf, fake_run, streamed, tmp_path):
    fake_run(stat=(0, STAT_OUT, ""))
    stream_ = streamed(FakeStream(b"c" * MiB))
    src = make(conf)
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", src.fingerprint(),
                                    64 * MiB)
    part.open(0)
    mon = transfer_monitor.TransferMonitor("mig-c", "s", MiB)
    mon.cancel()
    with pytest.raises(exception.MigrationCancelled):
        src.copy_to(part, mon, 0)
    part.close()
    assert stream_.stopped and stream_.closed


# -- stream.pump: splice and the read/write fallback agree ------------------


@pytest.mark.parametrize("use_splice", [True, False])
def test_pump_paths_agree(monkeypatch, tmp_path, use_splice):
    monkeypatch.setattr(stream, "USE_SPLICE", use_splice)
    monkeypatch.setattr(stream, "WRITE_BEHIND_BYTES", 256 * 1024)
    data = os.urandom(3 * MiB + 123)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, MiB)
    part.open(100)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        moved = stream.pump(fake, part, 100, mon, 256 * 1024, 30)
        part.finish(100 + len(data))
    finally:
        fake.close()
    assert moved == mon.done == len(data)
    with open(dst, "rb") as f:
        assert f.read() == b"\0" * 100 + data


def test_pump_falls_back_when_splice_is_refused(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(stream.os, "splice", refuse)
    data = os.urandom(MiB)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, MiB)
    part.open(0)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        assert stream.pump(fake, part, 0, mon, 65536, 30) == len(data)
        part.finish(len(data))
    finally:
        fake.close()
    with open(dst, "rb") as f:
        assert f.read() == data


def test_write_behind_starts_writeback_of_each_new_range(monkeypatch,
                                                         tmp_path):
    calls = []

    def record(fd, offset, nbytes, flags):
        calls.append((offset, nbytes, flags))
        return 0

    monkeypatch.setattr(stream, "_sync_file_range", record)
    monkeypatch.setattr(stream, "WRITE_BEHIND_BYTES", 256 * 1024)
    data = os.urandom(3 * MiB)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, 64 * MiB)
    part.open(4096)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        stream.pump(fake, part, 4096, mon, 256 * 1024, 30)
    finally:
        fake.close()
        part.close()
    assert calls
    # Contiguous ranges from the start offset on, write-out only (flag 2).
    assert calls[0][0] == 4096
    for (o1, n1, _), (o2, _, _) in zip(calls, calls[1:], strict=False):
        assert o1 + n1 == o2
    assert {flags for _, _, flags in calls} == {2}
    assert all(n >= 256 * 1024 for _, n, _ in calls)


def test_write_behind_failure_only_turns_it_off(monkeypatch, tmp_path):
    calls = []

    def fail(*args):
        calls.append(args)
        return -1

    monkeypatch.setattr(stream, "_sync_file_range", fail)
    monkeypatch.setattr(stream, "WRITE_BEHIND_BYTES", 64 * 1024)
    data = os.urandom(MiB)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, 64 * MiB)
    part.open(0)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        assert stream.pump(fake, part, 0, mon, 64 * 1024, 30) == len(data)
        part.finish(len(data))
    finally:
        fake.close()
    assert len(calls) == 1
    with open(dst, "rb") as f:
        assert f.read() == data


def test_local_write_error_is_a_transfer_failure(conf, fake_run, streamed,
                                                 tmp_path, monkeypatch):
    fake_run(stat=(0, STAT_OUT, ""))
    streamed(FakeStream(b"w" * MiB))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stream._Mover, "move", full)
    with pytest.raises(exception.TransferFailed,
                       match="No space left on device"):
        copy(make(conf), tmp_path)
