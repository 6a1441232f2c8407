"""The nfs transport without a server: requests, connecting, reading.

libnfs itself is replaced by helpers.FakeLib, which mirrors
transfer.libnfs.LibNfs; the real library and a real nfs-ganesha are
exercised by tests/functional/test_transport_nfs.py.  The copy loop is
tested in test_nfscopy.py, the binding and its errors in test_libnfs.py.
"""

import errno
import os

import pytest
from oslo_config import cfg as oslo_cfg

from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.conf import transfer as transfer_conf
from cs2os_agent.transfer import libnfs
from cs2os_agent.transfer import monitor
from cs2os_agent.transfer import nfs
from tests.unit.transfer.helpers import FakeLib
from tests.unit.transfer.helpers import MiB
from tests.unit.transfer.helpers import copy
from tests.unit.transfer.helpers import make_source


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


# -- requests --------------------------------------------------------------


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


# -- connecting ------------------------------------------------------------


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


def test_connections_come_from_the_config(cfg, monkeypatch):
    lib = FakeLib({"/pool/vol": b"x"})
    monkeypatch.setattr(libnfs, "load_libnfs", lambda: lib)
    assert cfg.transfer.nfs_connections == 3
    cfg.set_override("nfs_connections", 5, "transfer")
    source = {"transport": "nfs", "server": "nfs.example",
              "export": "/export/primary", "path": "pool/vol"}
    with transfer.get_source(source, cfg) as src:
        assert src._connections == 5


# -- reading ---------------------------------------------------------------


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
