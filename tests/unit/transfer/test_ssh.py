"""The ssh transport without ssh: requests, remote commands, the copy.

No process runs here (the unit conftest forbids it): the one function that
runs a short ssh command (``sshcmd.run``) and the stream process are
replaced by fakes fed from real pipes.  The ssh command line and how ssh's
failures read are in test_sshcmd.py; the pump under the copy is in
test_stream.py.
"""

import os
import shlex

import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import ssh
from cs2os_agent.transfer import sshcmd
from cs2os_agent.transfer import stream
from tests.unit.transfer.helpers import PATH
from tests.unit.transfer.helpers import STAT_LINE
from tests.unit.transfer.helpers import UNKNOWN
from tests.unit.transfer.helpers import FakeStream
from tests.unit.transfer.helpers import MiB
from tests.unit.transfer.helpers import make

REAL = "/mnt/0a1b-pool/3c4d-volume"


# -- the source ------------------------------------------------------------


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


# -- refusals --------------------------------------------------------------


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


# -- remote calls, with ssh replaced ---------------------------------------


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


# -- the copy, with the stream replaced ------------------------------------


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
