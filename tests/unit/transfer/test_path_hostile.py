"""Hostile sources for the ``path`` transport: nothing but a regular file
is ever read, and nothing else may block or act on open.

Real FIFOs, device nodes (made with mknod: these tests run as root, as
the agent does), sockets, symlinks and directories; every call that could
block runs in a thread with a deadline, so a regression fails the test
instead of hanging the run.
"""

import contextlib
import errno
import fcntl
import os
import socket
import stat
import threading

import pytest

from cs2os_agent import conf
from cs2os_agent import guestview
from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.transfer import path

DEADLINE = 5  # seconds; a refusal takes microseconds


def within(fn, *args, **kwargs):
    """``fn(*args)``, failing the test if it has not returned in time."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), "%s blocked for %d s" % (
        getattr(fn, "__name__", fn), DEADLINE)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def fifo(tmp_path):
    p = tmp_path / "volume.fifo"
    os.mkfifo(p)
    yield str(p)
    # A reader a regression left blocked in open() is released by a writer.
    with contextlib.suppress(OSError):
        os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))


def has_reader(fifo_path):
    """Whether anyone holds ``fifo_path`` open for reading (ENXIO: no)."""
    try:
        fd = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENXIO
        return False
    os.close(fd)
    return True


def device(tmp_path, name, kind, major, minor):
    """A device node made here: root only, as the agent runs."""
    assert os.geteuid() == 0, "these tests make device nodes: run as root"
    p = tmp_path / name
    os.mknod(p, kind | 0o600, os.makedev(major, minor))
    return str(p)


def source(p, roots):
    return path.PathSource(str(p), allowed_roots=[str(r) for r in roots],
                           chunk_size=1024 * 1024)


def refused(p, roots, kind):
    with pytest.raises(exception.SourceNotRegularFile) as err:
        within(source, p, roots)
    assert err.value.kwargs == {"path": str(p), "kind": kind}
    assert str(p) in str(err.value) and kind in str(err.value)
    # Still the type callers of the older "not a regular file" catch.
    assert isinstance(err.value, exception.InvalidSource)
    return err.value


def test_fifo_refused_without_blocking_or_being_opened(tmp_path, fifo):
    refused(fifo, [tmp_path], "FIFO")
    assert not has_reader(fifo)  # never opened, and no descriptor left


def test_char_device_refused(tmp_path):
    null = device(tmp_path, "null", stat.S_IFCHR, 1, 3)
    refused(null, [tmp_path], "character device")


def test_block_device_refused(tmp_path):
    loop = device(tmp_path, "loop", stat.S_IFBLK, 7, 0)
    refused(loop, [tmp_path], "block device")


def test_socket_refused(tmp_path):
    p = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(p))
        refused(p, [tmp_path], "socket")


def test_directory_refused(tmp_path):
    (tmp_path / "d").mkdir()
    refused(tmp_path / "d", [tmp_path], "directory")


def test_symlink_to_dev_zero_refused(tmp_path):
    link = tmp_path / "link"
    link.symlink_to("/dev/zero")
    # Leading out of the roots: said so, whatever lies at the end.
    with pytest.raises(exception.SourceNotAllowed) as err:
        within(source, link, [tmp_path])
    assert not isinstance(err.value, exception.SourceNotRegularFile)
    # Even with /dev allowed, the link is not followed, and the device
    # itself is no source either.
    refused(link, [tmp_path, "/dev"], "symbolic link")
    refused("/dev/zero", [tmp_path, "/dev"], "character device")


def test_fifo_outside_the_roots_is_only_not_allowed(tmp_path):
    (tmp_path / "root").mkdir()
    os.mkfifo(tmp_path / "elsewhere")
    with pytest.raises(exception.SourceNotAllowed) as err:
        within(source, tmp_path / "elsewhere", [tmp_path / "root"])
    assert "FIFO" not in str(err.value)


# -- a name swapped between the lstat and the open ---------------------------


@pytest.fixture
def lstat_says_regular(monkeypatch, tmp_path):
    """The lstat sees a regular file; whatever is there by the open is
    what the descriptor checks must catch."""
    regular = os.lstat(path.__file__)
    real = os.lstat
    monkeypatch.setattr(path.os, "lstat", lambda p: (
        regular if str(p).startswith(str(tmp_path)) else real(p)))


def test_fifo_swapped_in_does_not_block(tmp_path, fifo, lstat_says_regular):
    # O_NONBLOCK: the open returns at once; fstat refuses the FIFO.
    refused(fifo, [tmp_path], "FIFO")
    assert not has_reader(fifo)  # the descriptor was closed


def test_device_swapped_in_refused_by_fstat(tmp_path, lstat_says_regular):
    zero = device(tmp_path, "zero", stat.S_IFCHR, 1, 5)
    refused(zero, [tmp_path], "character device")


def test_symlink_swapped_in_is_not_followed(tmp_path, lstat_says_regular):
    target = tmp_path / "real"
    target.write_bytes(b"x")
    (tmp_path / "link").symlink_to(target)
    refused(tmp_path / "link", [tmp_path], "symbolic link")  # ELOOP


# -- the regular file that is read -------------------------------------------


def test_regular_file_opened_with_safe_flags_then_blocking(tmp_path,
                                                           monkeypatch):
    p = tmp_path / "vol"
    p.write_bytes(b"qcow2 or not" * 100)
    opened = []
    real_open = os.open

    def spy(name, flags, *args):
        opened.append((str(name), flags))
        return real_open(name, flags, *args)

    monkeypatch.setattr(path.os, "open", spy)
    with source(p, [tmp_path]) as s:
        fd = s._fd
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert s.read_header(12) == b"qcow2 or not"
    want = (os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    assert [(n, f & want, f & os.O_ACCMODE) for n, f in opened] == [
        (str(p), want, os.O_RDONLY)]


def test_open_regular_without_roots(tmp_path, fifo):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    fd, st = path.open_regular(str(p))
    try:
        assert st.st_size == 3 and os.pread(fd, 3, 0) == b"abc"
    finally:
        os.close(fd)
    with pytest.raises(exception.SourceNotRegularFile, match="FIFO"):
        within(path.open_regular, fifo)


@pytest.mark.parametrize("mode, kind", [
    (stat.S_IFIFO, "FIFO"), (stat.S_IFCHR, "character device"),
    (stat.S_IFBLK, "block device"), (stat.S_IFSOCK, "socket"),
    (stat.S_IFLNK, "symbolic link"), (stat.S_IFDIR, "directory"),
    (stat.S_IFREG, "regular file"), (0, "special file"),
])
def test_file_kind(mode, kind):
    assert path.file_kind(mode) == kind


# -- the readers built on it --------------------------------------------------


@pytest.fixture
def roots(tmp_path):
    conf.CONF.set_override("allowed_source_roots", [str(tmp_path)],
                           group="agent")
    yield
    conf.CONF.clear_override("allowed_source_roots", group="agent")


def test_template_source_through_the_factory(tmp_path, fifo, roots):
    # The conductor reads templates (and spools them) through this factory.
    with pytest.raises(exception.SourceNotRegularFile, match="FIFO"):
        within(transfer.get_source, {"transport": "path", "path": fifo},
               conf.CONF)
    null = device(tmp_path, "null", stat.S_IFCHR, 1, 3)
    with pytest.raises(exception.SourceNotRegularFile,
                       match="character device"):
        within(transfer.get_source, {"transport": "path", "path": null},
               conf.CONF)


def test_guest_view_readers_refuse_a_fifo(fifo):
    with pytest.raises(exception.SourceNotRegularFile, match="FIFO"):
        within(guestview.digest_by_map, fifo,
               [{"start": 0, "length": 512, "data": True, "offset": 0}])
    with pytest.raises(exception.SourceNotRegularFile, match="FIFO"):
        within(guestview.digest_raw, fifo, 512)
    assert not has_reader(fifo)
