"""The nfs transport without a server: requests, errors, the copy loop.

libnfs itself is replaced by FakeLib, which mirrors transfer.libnfs.LibNfs;
the real library and a real nfs-ganesha are exercised by
tests/functional/test_transport_nfs.py.
"""

import ctypes
import errno
import os
import stat
import threading
import time

import pytest
from oslo_config import cfg as oslo_cfg

from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.conf import transfer as transfer_conf
from cs2os_agent.transfer import libnfs
from cs2os_agent.transfer import monitor
from cs2os_agent.transfer import nfs
from cs2os_agent.transfer import partial as partial_file

MiB = 1024 * 1024


class FakeLib:
    """An NFS server in memory, behind LibNfs's methods."""

    def __init__(self, files=None, mount_errors=None, readmax=0):
        self.files = files or {}  # path -> bytes, or "dir"
        self.mount_errors = mount_errors or {}  # version -> (rc, message)
        self._readmax = readmax
        self.contexts = {}
        self.open_handles = set()
        self.pread_errors = {}  # offset -> rc
        self.reads = []
        self.configured = []
        self.mounted = []
        self.read_delay = {}  # context -> seconds every read of it takes
        self.reads_by_context = {}
        self._next = 1
        self._lock = threading.Lock()  # parallel copies connect at once

    def init_context(self):
        with self._lock:
            self._next += 1
            ctx = self._next
        self.contexts[ctx] = {"error": ""}
        return ctx

    def destroy_context(self, ctx):
        del self.contexts[ctx]

    def error(self, ctx):
        return self.contexts[ctx]["error"]

    def configure(self, ctx, version, timeout_s, uid, gid, port_args):
        self.contexts[ctx]["version"] = version
        self.configured.append((version, timeout_s, uid, gid, port_args))
        return 0

    def mount(self, ctx, server, export):
        version = self.contexts[ctx]["version"]
        if version in self.mount_errors:
            rc, self.contexts[ctx]["error"] = self.mount_errors[version]
            return rc
        self.mounted.append((server, export, version))
        return 0

    def open(self, ctx, path):
        if path not in self.files:
            self.contexts[ctx]["error"] = "NFS4ERR_NOENT"
            return -errno.ENOENT, None
        if self.files[path] == "denied":
            self.contexts[ctx]["error"] = "NFS4ERR_ACCESS"
            return -errno.EACCES, None
        fh = ("fh", path)
        self.open_handles.add(fh)
        return 0, fh

    def close(self, ctx, fh):
        self.open_handles.discard(fh)
        return 0

    def fstat(self, ctx, fh):
        st = libnfs._Stat()
        data = self.files[fh[1]]
        if data == "dir":
            st.mode = stat.S_IFDIR | 0o755
        else:
            st.mode = stat.S_IFREG | 0o644
            st.size = len(data)
        st.ino, st.mtime, st.mtime_nsec = 4242, 1700000000, 123
        return 0, st

    def readmax(self, ctx):
        return self._readmax

    def pread(self, ctx, fh, offset, count, buf):
        self.reads.append((offset, count))
        with self._lock:
            self.reads_by_context[ctx] = self.reads_by_context.get(ctx, 0) + 1
        if ctx in self.read_delay:
            time.sleep(self.read_delay[ctx])
        if offset in self.pread_errors:
            self.contexts[ctx]["error"] = "nfs_service failed"
            return self.pread_errors[offset]
        data = self.files[fh[1]][offset:offset + count]
        ctypes.memmove(buf, data, len(data))
        return len(data)


def make_source(lib, path="/pool/vol", versions=(4, 3), chunk=8 * MiB,
                **kwargs):
    return nfs.NfsSource("nfs.example", "/export/primary", path, versions,
                         30, chunk, lib=lib, **kwargs)


def copy(src, dst, mon, offset=0, checkpoint=64 * MiB):
    part = partial_file.PartialFile(str(dst), str(dst) + ".json",
                                    src.fingerprint(), checkpoint)
    part.open(offset)
    try:
        copied = src.copy_to(part, mon, offset)
        part.finish(src.size())
    finally:
        part.close()
    return copied


@pytest.fixture
def cfg():
    # A private ConfigOpts: the global CONF is parsed by the functional
    # tests' harness in the same pytest run.
    c = oslo_cfg.ConfigOpts()
    transfer_conf.register_opts(c)
    c([], project="cs2os", default_config_files=[])
    yield c
    # The option objects are shared with every other ConfigOpts: drop the
    # overrides a test set, or the next test sees them.
    c.reset()


# -- requests ------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("vol", "/vol"),
    ("/pool/vol", "/pool/vol"),
    ("pool//./vol/", "/pool/vol"),
])
def test_path_is_normalised_below_the_export(path, expected):
    assert nfs._clean_path(path) == expected


@pytest.mark.parametrize("path", [
    "../etc/shadow", "pool/../../x", "/..", "", "/", ".", "a\0b", 42, None,
])
def test_bad_paths_are_refused(path):
    with pytest.raises(exception.InvalidSource):
        nfs._clean_path(path)


@pytest.mark.parametrize("export, expected", [
    ("/", "/"), ("/export/primary/", "/export/primary"),
    ("//export/./primary", "/export/primary"),
])
def test_export_is_normalised(export, expected):
    assert nfs._clean_export(export) == expected


@pytest.mark.parametrize("export", ["export", "/a/../b", "", None])
def test_bad_exports_are_refused(export):
    with pytest.raises(exception.InvalidSource):
        nfs._clean_export(export)


@pytest.mark.parametrize("server", [
    "nfs.example", "10.0.0.5", "fd00::2", "::1", "storage-1"])
def test_servers(server):
    assert nfs._clean_server(server) == server


@pytest.mark.parametrize("server", [
    "", "-x", "a b", "host/export", "h?nfsport=1", "h&x", None, "a" * 300])
def test_bad_servers_are_refused(server):
    with pytest.raises(exception.InvalidSource):
        nfs._clean_server(server)


@pytest.mark.parametrize("version, expected", [
    (None, (4, 3)), ("auto", (4, 3)), ("3", (3,)), (4, (4,))])
def test_versions(version, expected):
    assert nfs._clean_versions(version) == expected


@pytest.mark.parametrize("version", ["2", 4.1, "v4", ""])
def test_bad_versions_are_refused(version):
    with pytest.raises(exception.InvalidSource, match="version"):
        nfs._clean_versions(version)


def test_port_arguments():
    assert libnfs.port_args(0, 0) == ""
    assert libnfs.port_args(20999, 0) == "nfsport=20999"
    assert libnfs.port_args(2049, 20048) == "nfsport=2049&mountport=20048"


def test_allowed_exports():
    nfs.check_export_allowed("s", "/e", [])
    nfs.check_export_allowed("s", "/e", ["/e/"])
    nfs.check_export_allowed("s", "/e", ["other:/x", "s:/e"])
    nfs.check_export_allowed("fd00::2", "/e", ["fd00::2:/e"])
    with pytest.raises(exception.NfsExportNotAllowed,
                       match="nfs_allowed_exports") as err:
        nfs.check_export_allowed("s", "/e", ["other:/e", "/e/sub", "junk"])
    assert isinstance(err.value, exception.SourceNotAllowed)
    assert "s:/e" in str(err.value)


# -- error mapping -------------------------------------------------------


@pytest.mark.parametrize("rc, message, version, port, shown_port", [
    (-errno.EIO, "nfs_service failed", 4, 0, "2049"),
    (-errno.EIO, "nfs_service failed", 4, 20999, "20999"),
    (-errno.EIO, "nfs_service failed", 3, 0, "111 (portmapper)"),
    (-errno.EPERM, "Failed to start connection. Invalid address:x. Can "
     "not resolv into IPv4/v6 structure.", 4, 0, "2049"),
    (-errno.ETIMEDOUT, "timed out", 3, 0, "111"),
    # A server that accepts the connection but never answers.
    (-errno.EINTR, "mount_cb: command timed out", 4, 0, "2049"),
])
def test_connection_failures_are_unreachable(rc, message, version, port,
                                             shown_port):
    err = libnfs.mount_error("srv", "/e", version, port, rc, message)
    assert isinstance(err, exception.NfsServerUnreachable)
    assert isinstance(err, exception.SourceUnreachable)
    assert err.code == 503
    assert "srv port %s" % shown_port in str(err)
    assert "NFSv%d" % version in str(err)


@pytest.mark.parametrize("rc, message", [
    (-errno.ENOENT, "mount_cb: NFS4: (path /x) failed with NFS4ERR_NOENT"),
    (-errno.EACCES, "mount_cb: RPC error: Mount failed with error "
     "MNT3ERR_ACCES(13) Permission denied(13)"),
    (-errno.EPERM, "NFS4ERR_PERM"),
])
def test_export_answers_are_export_unavailable(rc, message):
    err = libnfs.mount_error("srv", "/x", 4, 0, rc, message)
    assert isinstance(err, exception.NfsExportUnavailable)
    assert "/x" in str(err) and message in str(err)


def test_open_errors():
    assert isinstance(libnfs.open_error("u", -errno.ENOENT, "m"),
                      exception.SourceNotFound)
    assert isinstance(libnfs.open_error("u", -errno.ENOTDIR, "m"),
                      exception.SourceNotFound)
    denied = libnfs.open_error("u", -errno.EACCES, "NFS4ERR_ACCESS")
    assert isinstance(denied, exception.SourceUnreadable)
    assert "NFS4ERR_ACCESS" in str(denied)
    assert isinstance(libnfs.open_error("u", -errno.EINVAL, "m"),
                      exception.InvalidSource)


# -- connecting ----------------------------------------------------------


def test_auto_falls_back_to_nfsv3():
    lib = FakeLib({"/pool/vol": b"x"},
                  mount_errors={4: (-errno.EIO, "nfs_service failed")})
    with make_source(lib) as src:
        assert src.version == 3
        assert "(NFSv3)" in src.describe()
    assert [v for v, *_ in lib.configured] == [4, 3]
    assert lib.contexts == {} and lib.open_handles == set()


def test_the_most_telling_error_wins():
    lib = FakeLib(mount_errors={
        4: (-errno.EIO, "nfs_service failed"),
        3: (-errno.EACCES, "MNT3ERR_ACCES"),
    })
    with pytest.raises(exception.NfsExportUnavailable, match="NFSv3"):
        make_source(lib)
    assert lib.contexts == {}


def test_unreachable_on_every_version():
    lib = FakeLib(mount_errors={
        4: (-errno.EIO, "nfs_service failed"),
        3: (-errno.EIO, "nfs_service failed"),
    })
    with pytest.raises(exception.NfsServerUnreachable, match="NFSv4"):
        make_source(lib)


def test_missing_file_and_directory():
    lib = FakeLib({"/pool": "dir"})
    with pytest.raises(exception.SourceNotFound,
                       match="nfs://nfs.example/export/primary/pool/vol"):
        make_source(lib)
    with pytest.raises(exception.InvalidSource, match="regular file"):
        make_source(lib, path="/pool")
    assert lib.contexts == {} and lib.open_handles == set()


def test_permission_denied():
    lib = FakeLib({"/pool/vol": "denied"})
    with pytest.raises(exception.SourceUnreadable, match="NFS4ERR_ACCESS"):
        make_source(lib)


def test_options_reach_the_client():
    lib = FakeLib({"/pool/vol": b"x"})
    make_source(lib, versions=(3,), uid=107, gid=108, nfs_port=2050,
                mount_port=20048).close()
    assert lib.configured == [
        (3, 30, 107, 108, "nfsport=2050&mountport=20048")]
    assert lib.mounted == [("nfs.example", "/export/primary", 3)]


def test_from_request_uses_the_config(cfg, monkeypatch):
    lib = FakeLib({"/pool/vol": b"x"})
    monkeypatch.setattr(libnfs, "load_libnfs", lambda: lib)
    cfg.set_override("nfs_version", "3", "transfer")
    cfg.set_override("nfs_port", 2050, "transfer")
    cfg.set_override("nfs_uid", 0, "transfer")
    source = {"transport": "nfs", "server": "nfs.example",
              "export": "/export/primary/", "path": "pool/./vol"}
    with transfer.get_source(source, cfg) as src:
        assert isinstance(src, nfs.NfsSource)
        assert src.fingerprint()["path"] == "/pool/vol"
        assert src.fingerprint()["export"] == "/export/primary"
    assert lib.configured[-1] == (3, cfg.transfer.stall_timeout, 0, None,
                                  "nfsport=2050")
    # The request's version wins over the config.
    with transfer.get_source(dict(source, version="4"), cfg) as src:
        assert src.version == 4


def test_from_request_refuses_unlisted_exports(cfg, monkeypatch):
    monkeypatch.setattr(libnfs, "load_libnfs", lambda: FakeLib())
    cfg.set_override("nfs_allowed_exports", ["nfs.example:/export/a"],
                     "transfer")
    source = {"transport": "nfs", "server": "nfs.example",
              "export": "/export/b", "path": "v"}
    with pytest.raises(exception.SourceNotAllowed):
        transfer.get_source(source, cfg)
    with pytest.raises(exception.InvalidSource, match="'..'"):
        transfer.get_source(dict(source, export="/export/a",
                                 path="../b/v"), cfg)


# -- reading -------------------------------------------------------------


def test_fingerprint_header_and_size():
    data = os.urandom(3 * MiB + 5)
    lib = FakeLib({"/pool/vol": data})
    with make_source(lib) as src:
        assert src.fingerprint() == {
            "transport": "nfs", "server": "nfs.example",
            "export": "/export/primary", "path": "/pool/vol",
            "size": len(data), "mtime_ns": 1700000000 * 10**9 + 123,
            "fileid": 4242,
        }
        assert src.size() == len(data)
        assert src.read_header(2 * MiB + 7) == data[:2 * MiB + 7]
        assert src.read_header(10 * MiB) == data
        assert src.bytes_to_copy() == len(data)
        assert src.bytes_to_copy(MiB) == len(data) - MiB


def test_reads_are_at_most_1_mib_or_the_server_maximum():
    lib = FakeLib({"/pool/vol": bytes(5)}, readmax=64 * 1024)
    assert make_source(lib)._read_size == 64 * 1024
    lib = FakeLib({"/pool/vol": bytes(5)}, readmax=0)  # NFSv4: unknown
    assert make_source(lib)._read_size == MiB
    assert make_source(lib, chunk=256 * 1024)._read_size == 256 * 1024


def test_copy_content_progress_and_holes(tmp_path):
    data = (os.urandom(MiB) + bytes(2 * MiB) + os.urandom(MiB // 2)
            + bytes(MiB))
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    with make_source(lib) as src:
        mon = monitor.TransferMonitor("m", "s", src.bytes_to_copy())
        copied = copy(src, dst, mon)
    assert copied == mon.done == len(data)
    assert dst.read_bytes() == data
    # The zero blocks were not written: they stay holes.
    assert os.stat(dst).st_blocks * 512 < 3 * MiB
    assert all(count <= MiB for _, count in lib.reads)


def test_copy_resumes_at_an_offset(tmp_path):
    data = os.urandom(3 * MiB + 100)
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    dst.write_bytes(data[:2 * MiB] + b"garbage past the checkpoint")
    with make_source(lib) as src:
        lib.reads.clear()
        mon = monitor.TransferMonitor("m", "s", src.bytes_to_copy(2 * MiB))
        copied = copy(src, dst, mon, offset=2 * MiB)
    assert copied == len(data) - 2 * MiB == mon.done
    assert lib.reads[0][0] == 2 * MiB  # nothing before the offset re-read
    assert dst.read_bytes() == data


def test_read_error_fails_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(3 * MiB)})
    lib.pread_errors[MiB] = -errno.EIO
    with make_source(lib) as src:
        with pytest.raises(exception.TransferFailed,
                           match="nfs_service failed"):
            copy(src, tmp_path / "copy",
                 monitor.TransferMonitor("m", "s", 3 * MiB))


def test_file_that_shrinks_fails_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(2 * MiB)})
    with make_source(lib) as src:
        size = src.size()
        lib.files["/pool/vol"] = lib.files["/pool/vol"][:MiB]
        src.size = lambda: size  # the size seen before it shrank
        with pytest.raises(exception.SourceUnreadable, match="shrank"):
            copy(src, tmp_path / "copy",
                 monitor.TransferMonitor("m", "s", size))


def test_cancel_stops_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(4 * MiB)})
    with make_source(lib) as src:
        mon = monitor.TransferMonitor("mig", "sync_overlay", 4 * MiB)
        real_pread = lib.pread

        def cancel_after_first(*args):
            if lib.reads:
                mon.cancel()
            return real_pread(*args)

        lib.pread = cancel_after_first
        with pytest.raises(exception.MigrationCancelled):
            copy(src, tmp_path / "copy", mon)
    assert len(lib.reads) == 2


def test_bandwidth_limit_is_the_monitors(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(2 * MiB)})
    slept = []
    with make_source(lib) as src:
        mon = monitor.TransferMonitor(
            "m", "s", 2 * MiB, max_bandwidth_mbps=8,
            clock=lambda: 0.0, sleep=slept.append)
        copy(src, tmp_path / "copy", mon)
    assert sum(slept) > 0


# -- the ctypes binding --------------------------------------------------


class _Fn:
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __call__(self, *args):
        self.calls.append((self.name, args))
        return 0


@pytest.mark.parametrize("order, expected", [
    ("offset_count_buf", (1, 2, 4096, 512, "buf")),
    ("buf_count_offset", (1, 2, "buf", 512, 4096)),
])
def test_pread_argument_order_per_libnfs_version(order, expected):
    calls = []
    lib = libnfs.LibNfs(_recording_cdll(calls), order)
    lib.pread(1, 2, 4096, 512, "buf")
    assert calls[-1] == ("nfs_pread", expected)


def _recording_cdll(calls):
    class CDLL:
        def __getattr__(self, name):
            fn = _Fn(name, calls)
            setattr(self, name, fn)
            return fn

    return CDLL()


def test_every_nfsv4_context_is_a_client_of_its_own():
    # Two contexts under libnfs's default name would expire each other's
    # state on the server (NFS4ERR_EXPIRED).
    calls = []
    lib = libnfs.LibNfs(_recording_cdll(calls), "offset_count_buf")
    assert lib.configure(1, 4, 30, None, None, "") == 0
    assert lib.configure(2, 4, 30, None, None, "") == 0
    names = [args[1] for n, args in calls if n == "nfs4_set_client_name"]
    verifiers = [args[1] for n, args in calls if n == "nfs4_set_verifier"]
    assert len(set(names)) == 2 and len(set(verifiers)) == 2
    assert all(len(v) == 8 for v in verifiers)
    calls.clear()
    lib.configure(3, 3, 30, 0, 0, "nfsport=1")
    assert "nfs4_set_client_name" not in [n for n, _ in calls]
    assert ("nfs_set_timeout", (3, 30000)) in calls
    assert ("nfs_parse_url_dir", (3, b"nfs://localhost/?nfsport=1")) in calls


def test_missing_libnfs_is_reported(monkeypatch):
    monkeypatch.setattr(libnfs, "_lib", None)

    def no_such_lib(name):
        raise OSError("%s: cannot open shared object file" % name)

    monkeypatch.setattr(libnfs.ctypes, "CDLL", no_such_lib)
    with pytest.raises(exception.NfsClientUnavailable, match="libnfs13"):
        libnfs.load_libnfs()


def test_exception_messages_format():
    for err in (
        exception.NfsServerUnreachable(host="h", port=1, version="NFSv4",
                                       reason="r"),
        exception.NfsExportUnavailable(server="h", export="/e",
                                       version="NFSv3", reason="r"),
        exception.NfsClientUnavailable(reason="r"),
    ):
        assert "%(" not in str(err)



# -- parallel reads on several connections ---------------------------------


class RecordingPartial(partial_file.PartialFile):
    """Checks, at every position a copy reports, that all before it is
    really in the file: what a checkpoint would make durable."""

    def __init__(self, *args, expected, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected
        self.positions = []

    def advanced(self, position):
        self.positions.append(position)
        with open(self.path, "rb") as f:
            got = f.read(position)
        # Holes past the file's end read short: pad like the final size.
        got += bytes(position - len(got))
        assert got == self.expected[:position], position
        super().advanced(position)


def parallel_copy(src, dst, mon, expected, offset=0, checkpoint=MiB):
    part = RecordingPartial(str(dst), str(dst) + ".json",
                            src.fingerprint(), checkpoint,
                            expected=expected)
    part.open(offset)
    try:
        copied = src.copy_to(part, mon, offset)
        part.finish(src.size())
    finally:
        part.close()
    return copied, part


def test_parallel_copy_is_identical_and_reads_on_every_connection(tmp_path):
    data = (os.urandom(5 * MiB) + bytes(2 * MiB) + os.urandom(3 * MiB + 7)
            + bytes(MiB))
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    with make_source(lib, connections=3) as src:
        first = next(iter(lib.contexts))
        # The first connection is slow: its blocks finish out of order.
        lib.read_delay[first] = 0.02
        mon = monitor.TransferMonitor("m", "s", src.bytes_to_copy())
        copied, part = parallel_copy(src, dst, mon, data)
    assert copied == mon.done == len(data)
    assert dst.read_bytes() == data
    # The zero MiBs at 5-7 stayed a hole ...
    with open(dst, "rb") as f:
        assert os.lseek(f.fileno(), 5 * MiB, os.SEEK_HOLE) == 5 * MiB
        assert os.lseek(f.fileno(), 5 * MiB, os.SEEK_DATA) == 7 * MiB
    # ... and nothing else grew: 9 MiB of blocks written (the one at 10 MiB
    # holds 7 bytes of data), plus room for one ext4 extent-tree block,
    # which blocks landing out of order may need.
    assert os.stat(dst).st_blocks * 512 <= 9 * MiB + 4096
    # Three connections, every one of them read, all closed again.
    assert len(lib.reads_by_context) == 3
    assert all(lib.reads_by_context.values())
    assert sorted(o for o, _ in lib.reads) == list(range(0, len(data), MiB))
    # Positions only grow and end at the file's end.
    assert part.positions == sorted(part.positions)
    assert part.positions[-1] == len(data)
    assert lib.contexts == {}
    assert lib.open_handles == set()


def test_parallel_copy_resumes_from_a_checkpoint(tmp_path):
    data = os.urandom(12 * MiB + 3)
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    meta = str(dst) + ".json"
    with make_source(lib, connections=4) as src:
        fingerprint = src.fingerprint()
        mon = monitor.TransferMonitor("m", "s", len(data))
        real_advance = mon.advance

        def die_after_a_checkpoint(n):
            real_advance(n)
            # Blocks finish out of order: the checkpoint can lag behind.
            if mon.done >= 7 * MiB and part._durable:
                raise RuntimeError("agent killed")

        mon.advance = die_after_a_checkpoint
        part = partial_file.PartialFile(str(dst), meta, fingerprint,
                                        2 * MiB)
        part.open(part.resume_offset())
        with pytest.raises(RuntimeError, match="agent killed"):
            src.copy_to(part, mon, 0)
        part.close()
        # Garbage past the checkpoint, as a torn write would leave.
        with open(dst, "ab") as f:
            f.write(b"torn" * 1000)
    again = partial_file.PartialFile(str(dst), meta, fingerprint, 2 * MiB)
    resumed = again.resume_offset()
    assert resumed == part._durable
    assert 2 * MiB <= resumed < 12 * MiB
    with make_source(lib, connections=4) as src:
        lib.reads.clear()
        again.open(resumed)
        copied = src.copy_to(again, monitor.TransferMonitor(
            "m", "s", len(data) - resumed), resumed)
        again.finish(src.size())
    assert copied == len(data) - resumed
    assert min(o for o, _ in lib.reads) == resumed
    assert dst.read_bytes() == data
    assert lib.contexts == {}


def test_a_failed_extra_connection_only_means_fewer(tmp_path, caplog):
    data = os.urandom(6 * MiB)
    lib = FakeLib({"/pool/vol": data})
    with make_source(lib, connections=3) as src:
        real_mount = lib.mount
        lib.mount = lambda ctx, server, export: -errno.EIO
        try:
            copied, _ = parallel_copy(
                src, tmp_path / "copy",
                monitor.TransferMonitor("m", "s", len(data)), data)
        finally:
            lib.mount = real_mount
    assert copied == len(data)
    assert (tmp_path / "copy").read_bytes() == data
    assert "reading on fewer" in caplog.text
    assert lib.contexts == {}


def test_a_read_error_on_any_connection_fails_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(8 * MiB)})
    lib.pread_errors[5 * MiB] = -errno.EIO
    with make_source(lib, connections=3) as src:
        with pytest.raises(exception.TransferFailed,
                           match="nfs_service failed"):
            copy(src, tmp_path / "copy",
                 monitor.TransferMonitor("m", "s", 8 * MiB))
        # Every extra connection is closed again, every thread is done.
        assert len(lib.contexts) == 1
    assert not [t for t in threading.enumerate()
                if t.name.startswith("nfs-read")]


def test_parallel_cancel_stops_every_reader(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(64 * MiB)})
    with make_source(lib, connections=3) as src:
        mon = monitor.TransferMonitor("mig", "sync_overlay", 64 * MiB)
        real_advance = mon.advance

        def cancel_after_2_mib(n):
            real_advance(n)
            if mon.done >= 2 * MiB:
                mon.cancel()

        mon.advance = cancel_after_2_mib
        with pytest.raises(exception.MigrationCancelled):
            copy(src, tmp_path / "copy", mon)
        assert len(lib.contexts) == 1
    # Only the blocks already handed out were read (two per reader).
    assert len(lib.reads) <= 2 * MiB // MiB + 2 * 3
    assert not [t for t in threading.enumerate()
                if t.name.startswith("nfs-read")]


def test_parallel_copy_keeps_the_bandwidth_limit(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(4 * MiB)})
    slept = []
    with make_source(lib, connections=3) as src:
        mon = monitor.TransferMonitor(
            "m", "s", 4 * MiB, max_bandwidth_mbps=8,
            clock=lambda: 0.0, sleep=slept.append)
        copy(src, tmp_path / "copy", mon)
    # 4 MiB at 1 MB/s on a clock that stands still: by the last block the
    # monitor asked for the whole 4.2 s.
    assert max(slept) == pytest.approx(4 * MiB / 1e6)


@pytest.mark.parametrize("connections", [1, 3])
def test_a_file_changed_during_the_copy_is_refused(tmp_path, connections):
    data = os.urandom(4 * MiB)
    lib = FakeLib({"/pool/vol": data})
    real_fstat = lib.fstat
    with make_source(lib, connections=connections) as src:
        src.fingerprint()  # what the copy is of

        def touched(ctx, fh):
            rc, st = real_fstat(ctx, fh)
            if lib.reads:  # written to once the copy started
                st.mtime_nsec += 1
            return rc, st

        lib.fstat = touched
        with pytest.raises(exception.TransferFailed,
                           match="changed during the copy"):
            copy(src, tmp_path / "copy",
                 monitor.TransferMonitor("m", "s", len(data)))


def test_connections_come_from_the_config(cfg, monkeypatch):
    lib = FakeLib({"/pool/vol": b"x"})
    monkeypatch.setattr(libnfs, "load_libnfs", lambda: lib)
    assert cfg.transfer.nfs_connections == 3
    cfg.set_override("nfs_connections", 5, "transfer")
    source = {"transport": "nfs", "server": "nfs.example",
              "export": "/export/primary", "path": "pool/vol"}
    with transfer.get_source(source, cfg) as src:
        assert src._connections == 5
