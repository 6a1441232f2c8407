"""libnfs, loaded with ctypes: the calls the ``nfs`` transport makes.

This is the one place that knows libnfs's C interface: which shared
library to load (the soname decides the argument order of ``nfs_pread``),
the signatures of the synchronous calls, how ports are passed (libnfs 4 has
no setter for them), and what its return codes and messages mean as
cs2os exceptions.  :mod:`cs2os_agent.transfer.nfs` builds the transport on
:class:`LibNfs` and never touches ctypes' function objects; the unit tests
replace :class:`LibNfs` with a fake of the same methods, and the test
bed's NFS server probes the real library through it.
"""

import ctypes
import errno
import os
import socket
import threading
import uuid

from cs2os_agent.common import exception

# libnfs 4 (Debian 12's libnfs13) sends a READ as one RPC: larger ones than
# the server's maximum (1 MiB in nfs-ganesha) break the connection.  Larger
# requests did not help with NFSv3 either (libnfs splits them; 8 MiB was
# slower than 1 MiB here).
MAX_READ = 1024 * 1024
# soname -> argument order of nfs_pread, which libnfs 6 changed to POSIX's.
# Only libnfs13 (libnfs 4.0) is exercised by the tests.
_SONAMES = (
    ("libnfs.so.16", "buf_count_offset"),
    ("libnfs.so.14", "offset_count_buf"),
    ("libnfs.so.13", "offset_count_buf"),
)


class _Stat(ctypes.Structure):
    """struct nfs_stat_64: every field 64 bit in every libnfs version."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "dev ino mode nlink uid gid rdev size blksize blocks atime "
            "mtime ctime atime_nsec mtime_nsec ctime_nsec used"
        ).split()
    ]


class LibNfs:
    """The few libnfs calls the transport needs, with Python signatures.

    Every method mirrors one C function of the synchronous API and returns
    its result (0 or a byte count, ``-errno`` on failure).  Unit tests
    replace this class; only the functional tests run the real library.
    """

    def __init__(self, cdll, pread_order):
        self._lib = cdll
        self._pread_order = pread_order
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for name, restype, argtypes in (
            ("nfs_init_context", vp, []),
            ("nfs_destroy_context", None, [vp]),
            ("nfs_get_error", cp, [vp]),
            ("nfs_set_version", i, [vp, i]),
            ("nfs_set_timeout", None, [vp, i]),
            ("nfs_set_uid", None, [vp, i]),
            ("nfs_set_gid", None, [vp, i]),
            ("nfs_parse_url_dir", vp, [vp, cp]),
            ("nfs_destroy_url", None, [vp]),
            ("nfs_mount", i, [vp, cp, cp]),
            ("nfs_open", i, [vp, cp, i, ctypes.POINTER(vp)]),
            ("nfs_close", i, [vp, vp]),
            ("nfs_fstat64", i, [vp, vp, ctypes.POINTER(_Stat)]),
            ("nfs_get_readmax", ctypes.c_uint64, [vp]),
            ("nfs4_set_client_name", None, [vp, cp]),
            ("nfs4_set_verifier", None, [vp, cp]),
        ):
            fn = getattr(cdll, name)
            fn.restype, fn.argtypes = restype, argtypes
        u64 = ctypes.c_uint64
        self._lib.nfs_pread.restype = i
        self._lib.nfs_pread.argtypes = (
            [vp, vp, vp, ctypes.c_size_t, u64]
            if pread_order == "buf_count_offset"
            else [vp, vp, u64, u64, vp]
        )

    def init_context(self):
        return self._lib.nfs_init_context()

    def destroy_context(self, ctx):
        self._lib.nfs_destroy_context(ctx)

    def error(self, ctx):
        message = self._lib.nfs_get_error(ctx)
        return message.decode(errors="replace") if message else ""

    def configure(self, ctx, version, timeout_s, uid, gid, port_args):
        if self._lib.nfs_set_version(ctx, version) != 0:
            return -errno.EINVAL
        self._lib.nfs_set_timeout(ctx, timeout_s * 1000)
        if uid is not None:
            self._lib.nfs_set_uid(ctx, uid)
        if gid is not None:
            self._lib.nfs_set_gid(ctx, gid)
        if version == 4:
            # libnfs names an NFSv4 client "Libnfs pid:<pid> <time in s>":
            # a second context of this process would reuse the name, its
            # SETCLIENTID would expire the first one's open state
            # (NFS4ERR_EXPIRED) and two copies would break each other.
            # Each context is a client of its own (libnfs copies both).
            name = "cs2os-%s-%d-%s" % (socket.gethostname(), os.getpid(),
                                       uuid.uuid4().hex)
            self._lib.nfs4_set_client_name(ctx, name.encode())
            self._lib.nfs4_set_verifier(ctx, os.urandom(8))
        if port_args:
            # libnfs 4 has no setter for the ports: its URL parser is the
            # only way in.  The URL carries nothing else; the real server
            # and export go to nfs_mount as they are.
            url = self._lib.nfs_parse_url_dir(
                ctx, ("nfs://localhost/?" + port_args).encode()
            )
            if not url:
                return -errno.EINVAL
            self._lib.nfs_destroy_url(url)
        return 0

    def mount(self, ctx, server, export):
        return self._lib.nfs_mount(ctx, server.encode(), export.encode())

    def open(self, ctx, path):
        fh = ctypes.c_void_p()
        rc = self._lib.nfs_open(ctx, path.encode(), os.O_RDONLY,
                                ctypes.byref(fh))
        return rc, fh

    def close(self, ctx, fh):
        return self._lib.nfs_close(ctx, fh)

    def fstat(self, ctx, fh):
        st = _Stat()
        return self._lib.nfs_fstat64(ctx, fh, ctypes.byref(st)), st

    def readmax(self, ctx):
        return self._lib.nfs_get_readmax(ctx)

    def pread(self, ctx, fh, offset, count, buf):
        """Read into ``buf`` (a ctypes array); the GIL is released."""
        if self._pread_order == "buf_count_offset":
            return self._lib.nfs_pread(ctx, fh, buf, count, offset)
        return self._lib.nfs_pread(ctx, fh, offset, count, buf)


_lib = None
_lib_lock = threading.Lock()


def load_libnfs():
    """The process-wide :class:`LibNfs`, loaded on first use."""
    global _lib
    with _lib_lock:
        if _lib is None:
            tried = []
            for soname, order in _SONAMES:
                try:
                    cdll = ctypes.CDLL(soname)
                except OSError as exc:
                    tried.append(str(exc))
                    continue
                _lib = LibNfs(cdll, order)
                break
            else:
                raise exception.NfsClientUnavailable(
                    reason="; ".join(tried))
        return _lib


def port_args(nfs_port, mount_port):
    """libnfs URL arguments for non-standard ports ('' for none)."""
    args = []
    if nfs_port:
        args.append("nfsport=%d" % nfs_port)
    if mount_port:
        args.append("mountport=%d" % mount_port)
    return "&".join(args)


# -- what libnfs's answers mean --------------------------------------------


def _is_connection_error(rc, message):
    # libnfs reports a refused/failed connection or an unresolvable name
    # as EIO ("nfs_service failed") or EPERM ("Failed to start
    # connection"), a server that does not answer within the timeout as
    # EINTR ("command timed out"); the server itself answers with
    # ENOENT/EACCES/EPERM.
    lowered = message.lower()
    return (
        rc in (-errno.EIO, -errno.ETIMEDOUT, -errno.EINTR,
               -errno.ECONNREFUSED, -errno.EHOSTUNREACH, -errno.ENETUNREACH)
        or "connection" in lowered
        or "resolv" in lowered
        or "timed out" in lowered
        or "nfs_service failed" in lowered
    )


def mount_error(server, export, version, nfs_port, rc, message):
    """The typed exception for a failed nfs_mount."""
    name = "NFSv%d" % version
    reason = "%s (%s)" % (message or os.strerror(-rc), errno.errorcode.get(
        -rc, rc))
    if _is_connection_error(rc, message):
        port = nfs_port or (2049 if version == 4 else "111 (portmapper)")
        return exception.NfsServerUnreachable(
            host=server, port=port, version=name, reason=reason)
    return exception.NfsExportUnavailable(
        server=server, export=export, version=name, reason=reason)


def open_error(shown, rc, message):
    """The typed exception for a failed nfs_open of the overlay."""
    reason = message or os.strerror(-rc)
    if rc in (-errno.ENOENT, -errno.ENOTDIR):
        return exception.SourceNotFound(path=shown)
    if rc in (-errno.EISDIR, -errno.EINVAL):
        return exception.InvalidSource(
            source=shown, reason="not a regular file (%s)" % reason)
    return exception.SourceUnreadable(path=shown, reason=reason)
