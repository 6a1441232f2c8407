"""The ``path`` transport: the overlay is a file this node can open.

This is how a compute node that mounts CloudStack's NFS primary storage
reads an overlay.  The file is copied extent by extent (SEEK_DATA /
SEEK_HOLE) so holes are never read or written, with ``copy_file_range`` so
the data does not pass through user space when the kernel can avoid it, and
with write-behind (partial.WriteBehind) so the disk writes while the copy
runs rather than all at the final fsync.
"""

import errno
import os
import stat

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.transfer import base
from cs2os_agent.transfer import partial as transfer_partial

LOG = logging.getLogger(__name__)

# copy_file_range cannot work between these file systems or on this kernel;
# the plain read/write loop can.
_NO_COPY_FILE_RANGE = (
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOSYS,
    errno.EOPNOTSUPP,
    errno.EBADF,
)


def resolve_under_roots(fd, shown_path, roots):
    """Return the real path of open ``fd`` if it lies under one of ``roots``.

    Checking the descriptor after ``open`` (not the name before it) leaves
    no window for a symlink to be swapped in between check and use.
    """
    real = os.readlink("/proc/self/fd/%d" % fd)
    for root in roots:
        real_root = os.path.realpath(root)
        if os.path.commonpath([real, real_root]) == real_root:
            return real
    raise exception.SourceNotAllowed(
        path=shown_path, roots=", ".join(roots) or "(none configured)"
    )


def data_extents(fd, size, offset=0):
    """Yield (offset, length) of every data range of ``fd`` from ``offset``."""
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield offset, size - offset  # no hole support: all data
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            yield start, end - start
        offset = end


class PathSource(base.OverlaySource):
    transport = "path"

    def __init__(self, path, allowed_roots, chunk_size):
        if not os.path.isabs(path):
            raise exception.InvalidSource(
                source=path, reason="the path must be absolute"
            )
        self.path = path
        self._chunk_size = chunk_size
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise exception.SourceNotFound(path=path) from None
        except PermissionError as exc:
            raise exception.SourceUnreadable(
                path=path, reason=exc.strerror
            ) from None
        try:
            self.real_path = resolve_under_roots(
                self._fd, path, allowed_roots
            )
            self._stat = os.fstat(self._fd)
            if not stat.S_ISREG(self._stat.st_mode):
                raise exception.InvalidSource(
                    source=path, reason="not a regular file"
                )
        except Exception:
            os.close(self._fd)
            raise

    def describe(self):
        return "path:%s" % self.path

    def fingerprint(self):
        st = os.fstat(self._fd)
        return {
            "transport": self.transport,
            "path": self.real_path,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
        }

    def read_header(self, nbytes):
        try:
            return os.pread(self._fd, nbytes, 0)
        except OSError as exc:
            raise exception.SourceUnreadable(
                path=self.path, reason=exc.strerror
            ) from None

    def size(self):
        return os.fstat(self._fd).st_size

    def bytes_to_copy(self, offset=0):
        return sum(n for _, n in data_extents(self._fd, self.size(), offset))

    def copy_to(self, partial, monitor, offset=0):
        copied = 0
        copier = _RangeCopier(self._fd, partial.fd, self._chunk_size)
        # The copy is durable when it returns: let the disk write while
        # the copy goes on instead of all at the final fsync.
        write_behind = transfer_partial.WriteBehind(partial.fd, offset)
        try:
            for start, length in data_extents(self._fd, self.size(), offset):
                end = start + length
                pos = start
                while pos < end:
                    n = copier.copy(pos, min(self._chunk_size, end - pos))
                    if n == 0:
                        raise exception.SourceUnreadable(
                            path=self.path,
                            reason="file shrank while it was being copied",
                        )
                    pos += n
                    copied += n
                    write_behind.written(pos)
                    partial.advanced(pos)
                    monitor.advance(n)
        except OSError as exc:
            raise exception.TransferFailed(
                source=self.describe(), dest=partial.path,
                reason=exc.strerror,
            ) from None
        LOG.debug("Copied %d bytes of %s", copied, self.path)
        return copied

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _RangeCopier:
    """Copies one range with copy_file_range, else pread/pwrite."""

    def __init__(self, src, dst, chunk_size):
        self._src = src
        self._dst = dst
        self._chunk_size = chunk_size
        self._buffer = None  # allocated only if the fallback is needed

    def copy(self, offset, length):
        if self._buffer is None:
            try:
                return os.copy_file_range(
                    self._src,
                    self._dst,
                    length,
                    offset_src=offset,
                    offset_dst=offset,
                )
            except OSError as exc:
                if exc.errno not in _NO_COPY_FILE_RANGE:
                    raise
                self._buffer = bytearray(self._chunk_size)
        view = memoryview(self._buffer)[:length]
        n = os.preadv(self._src, [view], offset)
        written = 0
        while written < n:
            written += os.pwrite(self._dst, view[written:n], offset + written)
        return n
