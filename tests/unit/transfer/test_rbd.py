"""The rbd transport without a cluster: requests, extents, copies, errors.

librados/librbd are replaced by FakeLib, which mirrors
transfer.librbd.LibRbd over an in-memory image; the real libraries and a
real Ceph are exercised by tests/e2e/test_transfer_rbd.py.
"""

import errno
import types

import pytest

from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.transfer import librbd
from cs2os_agent.transfer import monitor
from cs2os_agent.transfer import rbd
from cs2os_agent.transfer import rbdcopy
from tests.unit.transfer.helpers import MiB
from tests.unit.transfer.helpers import copy

SIZE = 32 * MiB


class FakeLib:
    """LibRbd's methods over one image: ``data`` and its ``extents``."""

    def __init__(self, extents=((0, MiB), (5 * MiB, 9 * MiB)), size=SIZE,
                 fail=None):
        self.size_ = size
        self.data = bytearray(size)
        for offset, length in extents:
            for i in range(offset, offset + length, 4096):
                self.data[i:i + 4096] = (b"%08x" % i) * 512
        self.extents = list(extents)
        self.fail = fail or {}  # call name -> errno
        self.header_version, self.watching = 7, []
        self.reads, self.waited, self.diffs = [], [], []
        self.closed = []

    def _maybe_fail(self, call):
        if call in self.fail:
            raise librbd.RbdError(self.fail[call], call)

    def connect(self, user, conf_file, settings):
        self.user, self.conf_file, self.settings = user, conf_file, settings
        self._maybe_fail("rados_connect")
        return "cluster"

    def open_ioctx(self, cluster, pool):
        self._maybe_fail("rados_ioctx_create")
        return "ioctx"

    def open_image(self, ioctx, name, snapshot=None):
        self.snapshot = snapshot
        self._maybe_fail("rbd_open_read_only")
        return "image"

    def fsid(self, cluster):
        return "fsid-1"

    def image_id(self, image):
        return "abc123"

    def snap_id(self, image, snapshot):
        return 4

    def size(self, image):
        return self.size_

    def object_version(self, ioctx, oid):
        assert oid == "rbd_header.abc123"
        return self.header_version

    def watchers(self, image):
        return list(self.watching)

    def diff(self, image, offset, length):
        self.diffs.append((offset, length))
        # Per object, like librbd: the extents overlapping the window,
        # not clipped to it.
        return [(o, n) for o, n in self.extents
                if o < offset + length and o + n > offset]

    def aio_read(self, image, offset, length, buffer):
        self._maybe_fail("rbd_aio_read")
        self.reads.append((offset, length))
        return (offset, length, buffer)

    def aio_wait(self, completion):
        offset, length, buffer = completion
        self.waited.append(offset)
        self._maybe_fail("aio_wait")
        data = bytes(self.data[offset:offset + length])
        buffer[:len(data)] = data
        return len(data)

    def close_image(self, image):
        self.closed.append(image)

    def destroy_ioctx(self, ioctx):
        self.closed.append(ioctx)

    def shutdown(self, cluster):
        self.closed.append(cluster)


WHERE = rbd.Location("10.0.0.1:6789", "pool1", "vol-1", None, "cs2os")


def make(lib=None, where=WHERE, **kw):
    return rbd.RbdSource(where, "/etc/keyring", lib=lib or FakeLib(), **kw)


def mon():
    return monitor.TransferMonitor("m", "sync", 0)


# -- requests --------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "volumes", "a1b2c3d4-0000-4000-8000-000000000001", "cs_pool.v2", "0"])
def test_names_accepted(name):
    assert rbd.valid_name(name, "image") == name


@pytest.mark.parametrize("name", [
    "", "-x", ".hidden", "a/b", "a@snap", "a:conf=/etc/x", "a=b", "a,b",
    "a b", "a\nb", "a\0b", "x" * 128, None, 3, "ä"])
def test_hostile_names_refused(name):
    with pytest.raises(exception.InvalidSource, match="not a valid name"):
        rbd.valid_name(name, "image")


@pytest.mark.parametrize("value, expected", [
    ("10.0.0.1", "10.0.0.1"),
    ("10.0.0.1:6789, 10.0.0.2:3300", "10.0.0.1:6789,10.0.0.2:3300"),
    ("[fd00::1]:6789,mon-a.example.org", "[fd00::1]:6789,mon-a.example.org"),
])
def test_monitors_accepted(value, expected):
    assert rbd.valid_monitors(value) == expected


@pytest.mark.parametrize("value", [
    "", None, "10.0.0.1:0", "10.0.0.1:70000", "a;b", "-mon", "a:b:c",
    "10.0.0.1:6789,,10.0.0.2", "host/x", "a b", ",".join(["m"] * 17),
    "v2:10.0.0.1:3300"])
def test_monitors_refused(value):
    with pytest.raises(exception.InvalidSource):
        rbd.valid_monitors(value)


def conf(tmp_path, **kw):
    keyring = tmp_path / "keyring"
    keyring.write_text("[client.cs2os]\n\tkey = never read here\n")
    values = dict(rbd_user="cs2os", rbd_keyring=str(keyring), rbd_conf=None,
                  rbd_connect_timeout=3, stall_timeout=30,
                  chunk_size_kib=1024)
    values.update(kw)
    return types.SimpleNamespace(transfer=types.SimpleNamespace(**values))


def request(**kw):
    source = {"transport": "rbd", "pool": "pool1", "image": "vol-1",
              "monitors": "10.0.0.1:6789"}
    source.update(kw)
    return source


def test_request_builds_a_source(tmp_path, monkeypatch):
    lib = FakeLib()
    monkeypatch.setattr(librbd, "load", lambda: lib)
    src = transfer.get_source(request(snapshot="s1"), conf(tmp_path))
    assert isinstance(src, rbd.RbdSource)
    assert src.describe() == "rbd:pool1/vol-1@s1 (monitors 10.0.0.1:6789)"
    assert lib.user == "cs2os" and lib.snapshot == "s1"
    settings = dict(lib.settings)
    assert settings["mon_host"] == "10.0.0.1:6789"
    assert settings["keyring"] == str(tmp_path / "keyring")
    assert settings["client_mount_timeout"] == 3
    assert settings["rbd_atime_update_interval"] == 0
    assert lib.conf_file is None


@pytest.mark.parametrize("source, reason", [
    (request(image="../x"), "not a valid name"),
    (request(pool="--id=admin"), "not a valid name"),
    (request(snapshot="a@b"), "not a valid name"),
    (request(monitors="1.2.3.4 --keyring=/x"), "monitor"),
    (request(extra=1), "unknown extra"),
    ({"transport": "rbd", "pool": "p"}, "missing image, monitors"),
])
def test_bad_requests_are_refused(tmp_path, source, reason):
    with pytest.raises(exception.InvalidSource, match=reason):
        transfer.get_source(source, conf(tmp_path))


def test_a_missing_keyring_is_a_configuration_error(tmp_path):
    with pytest.raises(exception.TransportConfigInvalid,
                       match="rbd_keyring"):
        transfer.get_source(request(), conf(
            tmp_path, rbd_keyring=str(tmp_path / "none")))


def test_a_hostile_user_is_refused(tmp_path):
    with pytest.raises(exception.InvalidSource, match="rbd_user"):
        transfer.get_source(request(), conf(tmp_path, rbd_user="a:b"))


# -- connecting -----------------------------------------------------------


@pytest.mark.parametrize("call, code, error, text", [
    ("rados_connect", errno.ETIMEDOUT, exception.SourceUnreachable,
     "rbd_connect_timeout"),
    ("rados_connect", errno.EACCES, exception.SourceAuthFailed,
     "refused cephx user client.cs2os"),
    ("rados_connect", errno.EPERM, exception.SourceAuthFailed,
     "rbd_keyring"),
    ("rados_ioctx_create", errno.ENOENT, exception.SourceNotFound,
     "no such pool"),
    ("rbd_open_read_only", errno.ENOENT, exception.SourceNotFound,
     "no such image"),
    ("rbd_open_read_only", errno.EPERM, exception.SourceUnreadable,
     "may not read it"),
    ("rbd_open_read_only", errno.EIO, exception.SourceUnreadable,
     "Input/output error"),
])
def test_connect_errors(call, code, error, text):
    lib = FakeLib(fail={call: code})
    with pytest.raises(error, match=text):
        make(lib)
    if call != "rados_connect":  # (LibRbd.connect cleans up after itself)
        assert "cluster" in lib.closed  # nothing left open


# -- extents and copies -----------------------------------------------------


def test_extents_are_asked_per_window_and_clipped(monkeypatch):
    monkeypatch.setattr(rbd, "DIFF_WINDOW", 4 * MiB)
    src = make()
    assert list(src._extents(0, ())) == [
        (0, MiB), (5 * MiB, 3 * MiB), (8 * MiB, 4 * MiB),
        (12 * MiB, 2 * MiB)]
    assert src._lib.diffs == [(o, 4 * MiB) for o in range(0, SIZE, 4 * MiB)]


@pytest.mark.parametrize("offset, skip, expected", [
    (0, (), 10 * MiB),
    (512 * 1024, (), 9 * MiB + 512 * 1024),
    (0, ((0, 6 * MiB),), 8 * MiB),
    (0, ((6 * MiB, 7 * MiB), (20 * MiB, 30 * MiB)), 9 * MiB),
    (6 * MiB, ((0, 7 * MiB),), 7 * MiB),
    (20 * MiB, (), 0),
])
def test_bytes_to_copy(offset, skip, expected):
    assert make().bytes_to_copy(offset, skip) == expected


def test_skipped_ranges_are_never_asked_for():
    src = make()
    src.bytes_to_copy(0, ((MiB, SIZE),))
    assert src._lib.diffs == [(0, MiB)]


def test_copy_writes_the_extents_and_leaves_holes(tmp_path):
    src = make()
    m = mon()
    moved = copy(src, tmp_path / "out", m)
    assert moved == m.done == 10 * MiB
    data = (tmp_path / "out").read_bytes()
    assert data == bytes(src._lib.data)
    # Pieces never cross a READ_SIZE boundary.
    assert all(o // rbdcopy.READ_SIZE == (o + n - 1) // rbdcopy.READ_SIZE
               for o, n in src._lib.reads)
    assert sum(n for _, n in src._lib.reads) == 10 * MiB


def test_copy_from_an_offset_with_skip(tmp_path):
    src = make()
    out = tmp_path / "out"
    out.write_bytes(b"")
    moved = copy(src, out, mon(), offset=6 * MiB)
    assert moved == 8 * MiB
    assert min(o for o, _ in src._lib.reads) == 6 * MiB


def test_pieces():
    assert list(rbdcopy.pieces([(MiB, 8 * MiB)], 4 * MiB)) == [
        (MiB, 3 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, MiB)]


def test_cancel_waits_for_the_reads_in_flight(tmp_path):
    src = make(depth=3)
    m = mon()
    m.cancel()
    with pytest.raises(exception.MigrationCancelled):
        copy(src, tmp_path / "out", m)
    lib = src._lib
    assert sorted(lib.waited) == sorted(o for o, _ in lib.reads)
    assert len(lib.reads) == 3  # the first landed, two were in flight


def test_a_read_error_fails_the_copy(tmp_path):
    src = make(FakeLib(fail={"aio_wait": errno.EIO}))
    with pytest.raises(exception.TransferFailed, match="Input/output error"):
        copy(src, tmp_path / "out", mon())


def test_a_short_read_fails_the_copy(tmp_path):
    lib = FakeLib()
    src = make(lib)
    src.fingerprint()
    del lib.data[8 * MiB:]  # shrank under the copy
    with pytest.raises(exception.TransferFailed, match="shrank"):
        copy(src, tmp_path / "out", mon())


def test_a_changed_header_fails_the_copy(tmp_path):
    lib = FakeLib()
    src = make(lib)
    real = lib.aio_wait

    def write_meanwhile(completion):
        lib.header_version = 9
        return real(completion)

    lib.aio_wait = write_meanwhile
    with pytest.raises(exception.TransferFailed,
                       match="changed during the copy.*header version 9"):
        copy(src, tmp_path / "out", mon())


def test_an_image_in_use_is_refused(tmp_path):
    lib = FakeLib()
    lib.watching = [(4242, "10.0.0.9:0/1")]
    with pytest.raises(exception.SourceUnreadable,
                       match="client.4242 10.0.0.9:0/1"):
        copy(make(lib), tmp_path / "out", mon())
    assert lib.reads == []


def test_a_snapshot_is_its_id_and_size(tmp_path):
    lib = FakeLib()
    lib.watching = [(4242, "10.0.0.9:0/1")]  # the VM runs: no matter
    src = make(lib, where=rbd.Location("m", "p", "i", "s1", "u"))
    first = src.fingerprint()
    lib.header_version = 99
    assert src.fingerprint() == first
    assert first["snap_id"] == 4 and "header_version" not in first
    assert copy(src, tmp_path / "out", mon()) == 10 * MiB


def test_fingerprint_follows_the_header():
    lib = FakeLib()
    src = make(lib)
    first = src.fingerprint()
    assert first == src.fingerprint()
    assert first["fsid"] == "fsid-1" and first["image_id"] == "abc123"
    lib.header_version += 1
    assert src.fingerprint() != first


def test_header_and_ranges():
    src = make()
    data = bytes(src._lib.data)
    assert src.read_header(100) == data[:100]
    ranges = [(5 * MiB - 3, 10), (0, 5), (4 * MiB - 1, 6 * MiB)]
    assert src.read_ranges(ranges) == [data[o:o + n] for o, n in ranges]
    with pytest.raises(exception.SourceUnreadable, match="past the end"):
        src.read_ranges([(SIZE - 1, 2)])
    with pytest.raises(ValueError):
        src.read_ranges([(-1, 2)])


def test_close_releases_everything():
    lib = FakeLib()
    src = make(lib)
    src.close()
    src.close()
    assert lib.closed == ["image", "ioctx", "cluster"]
