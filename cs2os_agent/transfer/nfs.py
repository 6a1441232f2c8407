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
(see nfscopy.Copier).  ctypes, not the PyPI ``libnfs`` SWIG binding:
ctypes releases the GIL around every call, so a slow server never
freezes the agent's RPC threads, the readers run side by side, and nothing
needs compiling.  ``[transfer] stall_timeout`` is libnfs's RPC timeout: a
server that stops answering fails the copy after that long (a cancel is
noticed within half a second, and the copy stops once the READs in flight
return, so within that bound too).  The copy is accepted only if the file's
size, mtime, ctime and fileid after it are those first seen.

The ctypes binding to libnfs is :mod:`cs2os_agent.transfer.libnfs`, the
copy loop (threads and blocks) :mod:`cs2os_agent.transfer.nfscopy`; this
module holds what a request may name, the mounted client and the source.

A request's ``path`` is relative to its ``export``: it is normalised and may
not climb out of it (``..`` is refused); what the node may read at all is
the NFS server's export list, narrowed by ``[transfer] nfs_allowed_exports``.
"""

import ctypes
import functools
import os
import re
import stat

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.transfer import base
from cs2os_agent.transfer import libnfs
from cs2os_agent.transfer import nfscopy
from cs2os_agent.transfer import partial as transfer_partial
from cs2os_agent.transfer import ranges as transfer_ranges

LOG = logging.getLogger(__name__)

_VERSIONS = {"auto": (4, 3), "3": (3,), "4": (4,)}
_SERVER_RE = re.compile(r"^[A-Za-z0-9:][A-Za-z0-9.:-]{0,252}$")


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
                                 libnfs.port_args(nfs_port, mount_port))
        if rc == 0:
            rc = self._lib.mount(ctx, self.server, self.export)
        if rc != 0:
            err = libnfs.mount_error(self.server, self.export, version,
                                     nfs_port, rc, self._lib.error(ctx))
            self._lib.destroy_context(ctx)
            return err
        self.ctx, self.version = ctx, version
        return None

    def _open(self):
        rc, fh = self._lib.open(self.ctx, self.path)
        if rc != 0:
            raise libnfs.open_error(self.shown, rc, self._lib.error(self.ctx))
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
        return min(readmax or libnfs.MAX_READ, libnfs.MAX_READ)

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


class NfsSource(base.OverlaySource):
    transport = "nfs"

    def __init__(self, server, export, path, versions, timeout_s,
                 chunk_size, uid=None, gid=None, nfs_port=0, mount_port=0,
                 connections=1, lib=None):
        lib = lib or libnfs.load_libnfs()
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

    def read_ranges(self, ranges):
        ranges = transfer_ranges.check_ranges(ranges)
        shown = self._client.shown
        transfer_ranges.check_within(ranges, self.size(), shown)
        # Touching ranges (a table spanning clusters) in one go: fewer
        # READs, each up to the read size.
        pieces = []
        try:
            for start, end in transfer_ranges.coalesce(ranges):
                data = bytearray(end - start)
                position = start
                while position < end:
                    count = min(self._read_size, end - position)
                    buf = (ctypes.c_char * count).from_buffer(
                        data, position - start)
                    n = self._client.pread(position, count, buf)
                    if n == 0:
                        raise exception.SourceUnreadable(
                            path=shown, reason="the file ends at byte %d, "
                            "before the end of the ranges read (%d)"
                            % (position, end))
                    position += n
                pieces.append((start, data))
        except OSError as exc:
            raise exception.SourceUnreadable(
                path=shown, reason=exc.strerror) from None
        self._check_unchanged(exception.SourceUnreadable, "while it was "
                              "read", path=shown)
        return transfer_ranges.extract(pieces, ranges)

    def size(self):
        return self._stat().size

    def _wanted(self, offset, skip):
        """The ``(start, end)`` ranges a copy from ``offset`` reads."""
        size = self.size()
        return transfer_ranges.wanted(
            offset, size, transfer_ranges.check_skip(skip))

    def bytes_to_copy(self, offset=0, skip=()):
        # NFSv3 and v4.0 cannot tell holes from data: the whole rest of
        # the file (but ``skip``) crosses the wire (a qcow2 overlay holds
        # only allocated clusters anyway).
        return transfer_ranges.total(self._wanted(offset, skip))

    def copy_to(self, partial, monitor, offset=0, skip=()):
        wanted = self._wanted(offset, skip)
        # The copy is durable when it returns: let the disk write while
        # the network delivers instead of all at the final fsync.
        write_behind = transfer_partial.WriteBehind(partial.fd, offset)
        copier = nfscopy.Copier(self._client, self._connect, self._read_size,
                                self.describe())
        try:
            moved = copier.copy_ranges(partial, monitor, write_behind,
                                       wanted, self._connections)
        except OSError as exc:
            raise exception.TransferFailed(
                source=self.describe(), dest=partial.path,
                reason=exc.strerror or str(exc)) from None
        # Same size is not the same file: a write during the copy would
        # leave a torn image.  The file must still be the one first seen.
        self._check_unchanged(exception.TransferFailed, "during the copy",
                              source=self.describe(), dest=partial.path)
        LOG.debug("Copied %d bytes of %s", moved, self.describe())
        return moved

    def _check_unchanged(self, error, when, **names):
        """Raise ``error`` if the file is not the one first seen."""
        after = _identity(self._client.stat())
        if after != self._probed:
            raise error(reason="the file changed %s (before: %s; after: %s)"
                        % (when, _shown_identity(self._probed),
                           _shown_identity(after)), **names)

    def close(self):
        self._client.close()
