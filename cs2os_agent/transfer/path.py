"""The ``path`` transport: the overlay is a file this node can open.

This is how a compute node that mounts CloudStack's NFS primary storage
reads an overlay.  The file is copied extent by extent (SEEK_DATA /
SEEK_HOLE) so holes are never read or written, with ``copy_file_range`` so
the data does not pass through user space when the kernel can avoid it, and
with write-behind (partial.WriteBehind) so the disk writes while the copy
runs rather than all at the final fsync.

Only a regular file is ever opened (:func:`open_regular`, also what the
guest-view and base-proof readers use): a FIFO, device node, socket,
directory or symlink named as a source is refused by name and kind.
"""

import errno
import fcntl
import os
import stat

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.transfer import base
from cs2os_agent.transfer import partial as transfer_partial
from cs2os_agent.transfer import ranges as transfer_ranges

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


def _under_roots(real, roots):
    return any(
        os.path.commonpath([real, os.path.realpath(root)])
        == os.path.realpath(root)
        for root in roots
    )


def _not_allowed(shown_path, roots):
    return exception.SourceNotAllowed(
        path=shown_path, roots=", ".join(roots) or "(none configured)"
    )


def resolve_under_roots(fd, shown_path, roots):
    """Return the real path of open ``fd`` if it lies under one of ``roots``.

    Checking the descriptor after ``open`` (not the name before it) leaves
    no window for a symlink to be swapped in between check and use.
    """
    real = os.readlink("/proc/self/fd/%d" % fd)
    if _under_roots(real, roots):
        return real
    raise _not_allowed(shown_path, roots)


# Only regular files are ever opened: opening a FIFO blocks until a writer
# comes, opening or reading a device node can act (a tape rewinds, a
# watchdog arms, /dev/zero never ends), and a symlink could be swapped to
# lead anywhere.  O_NONBLOCK keeps an open of a FIFO or device swapped in
# after the lstat below from blocking, O_NOFOLLOW refuses a final symlink,
# O_NOCTTY keeps a terminal from becoming the agent's.
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY
               | os.O_CLOEXEC)

_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISDIR, "directory"),
)


def file_kind(mode):
    """What a file of ``st_mode`` is, in words."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "regular file" if stat.S_ISREG(mode) else "special file"


def _refuse(path, mode, roots):
    # What lies outside the roots is nobody's business: say only that.
    if roots is not None and not _under_roots(os.path.realpath(path), roots):
        raise _not_allowed(path, roots)
    raise exception.SourceNotRegularFile(path=path, kind=file_kind(mode))


def open_regular(path, roots=None):
    """Open ``path`` read-only if it is a regular file: ``(fd, stat)``.

    A FIFO, device node, socket, directory or symlink is refused with
    SourceNotRegularFile before it is opened (lstat); the ``fstat`` of the
    opened descriptor is the final word, for a name swapped in between.
    ``roots``: a refused name outside them is SourceNotAllowed instead.
    The descriptor is blocking again when returned.
    """
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            _refuse(path, st.st_mode, roots)
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise exception.SourceNotFound(path=path) from None
    except PermissionError as exc:
        raise exception.SourceUnreadable(
            path=path, reason=exc.strerror
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink after the lstat
            _refuse(path, stat.S_IFLNK, roots)
        raise exception.SourceUnreadable(
            path=path, reason=exc.strerror
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _refuse(path, st.st_mode, roots)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


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
        self._fd, self._stat = open_regular(path, allowed_roots)
        try:
            self.real_path = resolve_under_roots(
                self._fd, path, allowed_roots
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

    def read_ranges(self, ranges):
        ranges = transfer_ranges.check_ranges(ranges)
        transfer_ranges.check_within(ranges, self.size(), self.path)
        out = []
        try:
            for offset, length in ranges:
                data = os.pread(self._fd, length, offset)
                while len(data) < length:  # a read stops at 2 GiB
                    more = os.pread(self._fd, length - len(data),
                                    offset + len(data))
                    if not more:
                        raise exception.SourceUnreadable(
                            path=self.path, reason="the file ends at byte "
                            "%d, in the range of %d bytes at offset %d"
                            % (offset + len(data), length, offset))
                    data += more
                out.append(data)
        except OSError as exc:
            raise exception.SourceUnreadable(
                path=self.path, reason=exc.strerror
            ) from None
        return out

    def size(self):
        return os.fstat(self._fd).st_size

    def _extents(self, offset, skip):
        """The data extents to copy: from ``offset`` on, outside ``skip``."""
        size = self.size()
        if not skip:
            return data_extents(self._fd, size, offset)
        wanted = transfer_ranges.wanted(
            offset, size, transfer_ranges.check_skip(skip))
        # Each wanted range on its own: a skipped one is never even sought.
        return (extent for start, end in wanted
                for extent in data_extents(self._fd, end, start))

    def bytes_to_copy(self, offset=0, skip=()):
        return sum(n for _, n in self._extents(offset, skip))

    def copy_to(self, partial, monitor, offset=0, skip=()):
        copied = 0
        copier = _RangeCopier(self._fd, partial.fd, self._chunk_size)
        # The copy is durable when it returns: let the disk write while
        # the copy goes on instead of all at the final fsync.
        write_behind = transfer_partial.WriteBehind(partial.fd, offset)
        try:
            for start, length in self._extents(offset, skip):
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
