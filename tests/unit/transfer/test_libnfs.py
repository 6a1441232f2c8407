"""The ctypes binding to libnfs and how its failures become errors.

The library is a recording stand-in (no libnfs is loaded); the real one
is exercised by tests/functional/test_transport_nfs.py.
"""

import errno

import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import libnfs


def test_port_arguments():
    assert libnfs.port_args(0, 0) == ""
    assert libnfs.port_args(20999, 0) == "nfsport=20999"
    assert libnfs.port_args(2049, 20048) == "nfsport=2049&mountport=20048"


# -- error mapping ---------------------------------------------------------


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


def test_exception_messages_format():
    for err in (
        exception.NfsServerUnreachable(host="h", port=1, version="NFSv4",
                                       reason="r"),
        exception.NfsExportUnavailable(server="h", export="/e",
                                       version="NFSv3", reason="r"),
        exception.NfsClientUnavailable(reason="r"),
    ):
        assert "%(" not in str(err)


# -- the ctypes binding ----------------------------------------------------


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
