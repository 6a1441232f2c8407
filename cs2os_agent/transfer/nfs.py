"""The ``nfs`` transport: read the overlay from the NFS server, in user space.

A compute node reaches CloudStack's primary storage directly, without a
kernel mount: the agent speaks NFS itself through libnfs (NFSv3 and NFSv4),
loaded with ctypes from the distribution's shared library.

Why in-process libnfs (measured against nfs-ganesha, 1 GiB file, NFSv3
and NFSv4): a pread of 1 MiB at a time into the partial file runs at the
speed of ``nfs-cp``, the raw baseline, while ``nfs-cat`` streamed through a
pipe into the agent reached one half to two thirds of it, and ``qemu-img``'s
nfs:// driver speaks NFSv3 only and was slower still.  pread at any offset
also makes a resumed copy read only what is missing, and lets several
connections (``[transfer] nfs_connections``) read different blocks at once
(see NfsSource._copy_parallel).  ctypes, not the PyPI ``libnfs`` SWIG
binding: ctypes releases the GIL around every call, so a slow server never
freezes the agent's RPC threads, the readers run side by side, and nothing
needs compiling.  ``[transfer] stall_timeout`` is libnfs's RPC timeout: a
server that stops answering fails the copy after that long (a cancel is
noticed within half a second, and the copy stops once the READs in flight
return, so within that bound too).  The copy is accepted only if the file's
size, mtime, ctime and fileid after it are those first seen.

A request's ``path`` is relative to its ``export``: it is normalised and may
not climb out of it (``..`` is refused); what the node may read at all is
the NFS server's export list, narrowed by ``[transfer] nfs_allowed_exports``.
"""

import ctypes
import errno
import functools
import os
import queue
import re
import socket
import stat
import threading
import uuid

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.transfer import base
from cs2os_agent.transfer import partial as transfer_partial

LOG = logging.getLogger(__name__)

# libnfs 4 (Debian 12's libnfs13) sends a READ as one RPC: larger ones than
# the server's maximum (1 MiB in nfs-ganesha) break the connection.  Larger
# requests did not help with NFSv3 either (libnfs splits them; 8 MiB was
# slower than 1 MiB here).
MAX_READ = 1024 * 1024
# What an all-zero block is compared with; shared, never written.
_ZEROS = memoryview(bytes(MAX_READ))

# soname -> argument order of nfs_pread, which libnfs 6 changed to POSIX's.
# Only libnfs13 (libnfs 4.0) is exercised by the tests.
_SONAMES = (
    ("libnfs.so.16", "buf_count_offset"),
    ("libnfs.so.14", "offset_count_buf"),
    ("libnfs.so.13", "offset_count_buf"),
)

# How often the copy wakes up to notice a cancel while it waits for blocks.
_POLL_SECONDS = 0.5

_VERSIONS = {"auto": (4, 3), "3": (3,), "4": (4,)}
_SERVER_RE = re.compile(r"^[A-Za-z0-9:][A-Za-z0-9.:-]{0,252}$")


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


# -- request validation ----------------------------------------------------


def _clean_server(server):
    if not isinstance(server, str) or not _SERVER_RE.match(server):
        raise exception.InvalidSource(
            source="nfs", reason="server %r is not a host name or IP "
            "address" % (server,))
    return server


def _clean_export(export):
    if not isinstance(export, str) or not export.startswith("/"):
        raise exception.InvalidSource(
            source="nfs", reason="export %r must be an absolute path"
            % (export,))
    return _normalise(export, "export", export) or "/"


def _clean_path(path):
    """The file's path below the export, as libnfs wants it ("/a/b")."""
    if not isinstance(path, str):
        raise exception.InvalidSource(
            source="nfs", reason="path %r is not a string" % (path,))
    relative = _normalise(path, "path", path)
    if not relative:
        raise exception.InvalidSource(
            source="nfs", reason="path %r names no file" % (path,))
    return relative


def _normalise(value, what, shown):
    """Join the non-trivial components; refuse any '..' outright.

    Normalising '..' away (posixpath.normpath) would silently turn a
    request for another directory into one for this one: refusing is
    clearer than guessing.
    """
    if "\0" in value or len(value) > 4096:
        raise exception.InvalidSource(
            source="nfs", reason="%s %r is not a valid path" % (what, shown))
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise exception.InvalidSource(
            source="nfs", reason="%s %r may not contain '..'" % (what, shown))
    return "/" + "/".join(parts) if parts else ""


def _clean_versions(version):
    key = "auto" if version is None else str(version)
    if key not in _VERSIONS:
        raise exception.InvalidSource(
            source="nfs", reason="version %r is not one of auto, 3, 4"
            % (version,))
    return _VERSIONS[key]


def check_export_allowed(server, export, allowed):
    """Refuse an export [transfer] nfs_allowed_exports does not list."""
    if not allowed:
        return
    for entry in allowed:
        # "server:/export" or "/export"; rpartition keeps IPv6 hosts whole.
        host, sep, path = entry.rpartition(":")
        if (sep and host != server) or not path.startswith("/"):
            continue
        if (_normalise(path, "export", entry) or "/") == export:
            return
    raise exception.NfsExportNotAllowed(
        path="%s:%s" % (server, export), roots=", ".join(allowed))


# -- error mapping ----------------------------------------------------------


def port_args(nfs_port, mount_port):
    """libnfs URL arguments for non-standard ports ('' for none)."""
    args = []
    if nfs_port:
        args.append("nfsport=%d" % nfs_port)
    if mount_port:
        args.append("mountport=%d" % mount_port)
    return "&".join(args)


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


def _pick(errors):
    """Of the errors of every version tried, the most telling one.

    An export or permission answer comes from a server that is there, so
    it says more than "cannot connect" from a version it does not serve.
    """
    for err in errors:
        if not isinstance(err, exception.NfsServerUnreachable):
            return err
    return errors[0]


# -- the transport ----------------------------------------------------------


class NfsClient:
    """One mounted libnfs context with the overlay file open."""

    def __init__(self, lib, server, export, path, versions, timeout_s,
                 uid=None, gid=None, nfs_port=0, mount_port=0):
        self._lib = lib
        self.server, self.export, self.path = server, export, path
        self.shown = "nfs://%s%s%s" % (server, export.rstrip("/"), path)
        self.ctx = self.fh = None
        self.version = None
        errors = []
        for version in versions:
            err = self._mount(version, timeout_s, uid, gid, nfs_port,
                              mount_port)
            if err is None:
                break
            errors.append(err)
        else:
            if len(errors) > 1:
                LOG.debug("Every NFS version failed for %s: %s",
                          self.shown, "; ".join(map(str, errors)))
            raise _pick(errors)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _mount(self, version, timeout_s, uid, gid, nfs_port, mount_port):
        ctx = self._lib.init_context()
        if not ctx:
            raise exception.NfsClientUnavailable(
                reason="nfs_init_context failed")
        rc = self._lib.configure(ctx, version, timeout_s, uid, gid,
                                 port_args(nfs_port, mount_port))
        if rc == 0:
            rc = self._lib.mount(ctx, self.server, self.export)
        if rc != 0:
            err = mount_error(self.server, self.export, version, nfs_port,
                              rc, self._lib.error(ctx))
            self._lib.destroy_context(ctx)
            return err
        self.ctx, self.version = ctx, version
        return None

    def _open(self):
        rc, fh = self._lib.open(self.ctx, self.path)
        if rc != 0:
            raise open_error(self.shown, rc, self._lib.error(self.ctx))
        self.fh = fh
        st = self.stat()
        if not stat.S_ISREG(st.mode):
            raise exception.InvalidSource(
                source=self.shown, reason="not a regular file")

    def stat(self):
        """GETATTR of the open file (size, mtime, fileid)."""
        rc, st = self._lib.fstat(self.ctx, self.fh)
        if rc != 0:
            raise exception.SourceUnreadable(
                path=self.shown, reason=self._lib.error(self.ctx))
        return st

    def read_size(self):
        """Bytes per READ: the server's maximum, at most MAX_READ."""
        readmax = self._lib.readmax(self.ctx)  # 0 with NFSv4 in libnfs 4
        return min(readmax or MAX_READ, MAX_READ)

    def pread(self, offset, count, buf):
        """Read ``count`` bytes at ``offset`` into ctypes array ``buf``."""
        n = self._lib.pread(self.ctx, self.fh, offset, count, buf)
        if n < 0:
            raise OSError(-n, self._lib.error(self.ctx) or os.strerror(-n))
        return n

    def close(self):
        if self.fh is not None:
            self._lib.close(self.ctx, self.fh)
            self.fh = None
        if self.ctx is not None:
            self._lib.destroy_context(self.ctx)
            self.ctx = None


def _identity(st):
    """What must not change while a file is copied."""
    return (st.size, st.mtime, st.mtime_nsec, st.ctime, st.ctime_nsec,
            st.ino)


def _shown_identity(identity):
    size, mtime, mtime_nsec, ctime, ctime_nsec, ino = identity
    return "size %d, mtime %d.%09d, ctime %d.%09d, fileid %d" % (
        size, mtime, mtime_nsec, ctime, ctime_nsec, ino)


class _Block:
    """One reusable buffer: READ a range into it, write it to the copy."""

    def __init__(self, size):
        self._buf = bytearray(size)
        self._cbuf = (ctypes.c_char * size).from_buffer(self._buf)
        self._view = memoryview(self._buf)

    def copy(self, client, fd, position, count):
        """Copy up to ``count`` bytes at ``position``; bytes read."""
        n = client.pread(position, count, self._cbuf)
        if n == 0:
            raise exception.SourceUnreadable(
                path=client.shown,
                reason="file shrank while it was being copied")
        # An all-zero block stays a hole in the copy (the partial file
        # gets its final size at the end).  startswith is a memcmp;
        # comparing memoryviews would go byte by byte.
        if not self._buf.startswith(_ZEROS[:n]):
            written = 0
            while written < n:
                written += os.pwrite(fd, self._view[written:n],
                                     position + written)
        return n


class NfsSource(base.OverlaySource):
    transport = "nfs"

    def __init__(self, server, export, path, versions, timeout_s,
                 chunk_size, uid=None, gid=None, nfs_port=0, mount_port=0,
                 connections=1, lib=None):
        lib = lib or load_libnfs()
        self._client = NfsClient(
            lib, server, export, path, versions, timeout_s, uid=uid,
            gid=gid, nfs_port=nfs_port, mount_port=mount_port)
        # More connections for the copy: the same server, export, file
        # and the version the first one settled on.
        self._connect = functools.partial(
            NfsClient, lib, server, export, path, (self._client.version,),
            timeout_s, uid=uid, gid=gid, nfs_port=nfs_port,
            mount_port=mount_port)
        self._connections = max(1, connections)
        self._read_size = min(self._client.read_size(), chunk_size)
        self._probed = None  # the first stat: what a copy must match

    @classmethod
    def from_request(cls, source, conf):
        t = conf.transfer
        server = _clean_server(source["server"])
        export = _clean_export(source["export"])
        path = _clean_path(source["path"])
        version = source.get("version")
        versions = _clean_versions(t.nfs_version if version is None
                                   else version)
        check_export_allowed(server, export, t.nfs_allowed_exports)
        return cls(server, export, path, versions, t.stall_timeout,
                   t.chunk_size_kib * 1024, uid=t.nfs_uid, gid=t.nfs_gid,
                   nfs_port=t.nfs_port, mount_port=t.nfs_mount_port,
                   connections=t.nfs_connections)

    @property
    def version(self):
        return self._client.version

    def describe(self):
        return "%s (NFSv%d)" % (self._client.shown, self._client.version)

    def _stat(self):
        st = self._client.stat()
        if self._probed is None:
            self._probed = _identity(st)
        return st

    def fingerprint(self):
        st = self._stat()
        c = self._client
        return {
            "transport": self.transport,
            "server": c.server,
            "export": c.export,
            "path": c.path,
            "size": st.size,
            "mtime_ns": st.mtime * 1_000_000_000 + st.mtime_nsec,
            "fileid": st.ino,
        }

    def read_header(self, nbytes):
        nbytes = min(nbytes, self.size())
        buf = (ctypes.c_char * self._read_size)()
        data = bytearray()
        try:
            while len(data) < nbytes:
                n = self._client.pread(
                    len(data), min(self._read_size, nbytes - len(data)), buf)
                if n == 0:
                    break
                data += buf.raw[:n]
        except OSError as exc:
            raise exception.SourceUnreadable(
                path=self._client.shown, reason=exc.strerror) from None
        return bytes(data)

    def size(self):
        return self._stat().size

    def bytes_to_copy(self, offset=0):
        # NFSv3 and v4.0 cannot tell holes from data: the whole rest of
        # the file crosses the wire (a qcow2 overlay holds only allocated
        # clusters anyway).
        return max(self.size() - offset, 0)

    def copy_to(self, partial, monitor, offset=0):
        size = self.size()
        # The copy is durable when it returns: let the disk write while
        # the network delivers instead of all at the final fsync.
        write_behind = transfer_partial.WriteBehind(partial.fd, offset)
        workers = min(self._connections,
                      -(-(size - offset) // self._read_size))
        try:
            if workers > 1:
                position = self._copy_parallel(partial, monitor, offset,
                                               size, write_behind, workers)
            else:
                position = self._copy_serial(partial, monitor, offset, size,
                                             write_behind)
        except OSError as exc:
            raise exception.TransferFailed(
                source=self.describe(), dest=partial.path,
                reason=exc.strerror or str(exc)) from None
        # Same size is not the same file: a write during the copy would
        # leave a torn image.  The file must still be the one first seen.
        after = _identity(self._client.stat())
        if after != self._probed:
            raise exception.TransferFailed(
                source=self.describe(), dest=partial.path,
                reason="the file changed during the copy (before: %s; "
                "after: %s)" % (_shown_identity(self._probed),
                                _shown_identity(after)))
        LOG.debug("Copied %d bytes of %s", position - offset,
                  self.describe())
        return position - offset

    def _copy_serial(self, partial, monitor, offset, size, write_behind):
        block = _Block(self._read_size)
        position = offset
        while position < size:
            n = block.copy(self._client, partial.fd, position,
                           min(self._read_size, size - position))
            position += n
            write_behind.written(position)
            partial.advanced(position)
            monitor.advance(n)
        return position

    def _copy_parallel(self, partial, monitor, offset, size, write_behind,
                       workers):
        """Read on ``workers`` connections at once; write at the offsets.

        One READ of one connection at a time leaves the connection idle
        while the client writes and the server looks the next block up;
        several connections keep both sides busy.  Measured (NFSv4, 600
        MiB, durable copies into a file, nfs-ganesha on the same 2 cores,
        medians of 7 interleaved runs): nfs-cp 634 MB/s without fsync;
        1 connection 645, 2 766, 3 817, 4 799.  Tried and slower: the
        async libnfs API with 2-8 READs outstanding on one connection
        (755-886 where threads on 2-3 connections made 938-1131 in the
        same runs: the Python event loop costs more than it saves), and
        READs over 1 MiB, which libnfs 4 refuses (see MAX_READ).

        The blocks (one READ each) are handed out in file order by this
        thread, at most two per worker ahead of the last one finished, so
        memory is one buffer per worker and the bandwidth limit and cancel
        act within a few blocks.  They finish out of order: ``partial``
        only ever hears of the end of the contiguous prefix that is
        written (``frontier``), so a checkpoint never records a byte that
        may still be missing before it.
        """
        blocks = iter(range(offset, size, self._read_size))
        todo = queue.SimpleQueue()
        done = queue.SimpleQueue()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=self._worker,
                args=(self._client if i == 0 else None, partial.fd, todo,
                      done, stop),
                name="nfs-read-%d" % i, daemon=True)
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()

        def hand_out():
            start = next(blocks, None)
            if start is not None:
                todo.put((start, min(self._read_size, size - start)))

        for _ in range(2 * workers):
            hand_out()
        finished = {}
        frontier = offset
        try:
            while frontier < size:
                try:
                    start, length, error = done.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    monitor.check_cancelled()
                    continue
                if start is None:  # an extra connection could not open
                    LOG.warning("%s: one more NFS connection failed, "
                                "reading on fewer: %s", self.describe(),
                                error)
                    continue
                if error is not None:
                    raise error
                finished[start] = length
                while frontier in finished:
                    frontier += finished.pop(frontier)
                write_behind.written(frontier)
                partial.advanced(frontier)
                monitor.advance(length)
                hand_out()
        finally:
            stop.set()
            for _ in threads:
                todo.put(None)
            for thread in threads:
                thread.join()
        return frontier

    def _worker(self, client, fd, todo, done, stop):
        """Copy the blocks of ``todo`` until a None; report to ``done``."""
        own = client is None
        try:
            if own:
                try:
                    client = self._connect()
                except Exception as exc:  # noqa: BLE001 - only an extra
                    done.put((None, None, exc))
                    return
            block = _Block(self._read_size)
            while not stop.is_set():
                item = todo.get()
                if item is None:
                    return
                start, length = item
                try:
                    position = start
                    while position < start + length:
                        position += block.copy(client, fd, position,
                                               start + length - position)
                except BaseException as exc:  # noqa: BLE001 - to main
                    done.put((start, length, exc))
                    return
                done.put((start, length, None))
        finally:
            if own and client is not None:
                client.close()

    def close(self):
        self._client.close()
