"""Copy a byte stream produced by a helper process into a partial file.

Used by the transports whose fastest mechanism is an external program
writing the file to its stdout (``ssh host cat``): the data moves from the
pipe into the file with ``splice`` (no copy through user space; a
read/write loop through one reusable buffer where splice is refused), so
memory does not grow with the file, and every chunk goes through the
monitor (progress, bandwidth, cancel).  A stream may also carry only some
ranges of the file, one after another (a copy that leaves snapshot data
out): each is written at its own offset, and what lies between them stays
a hole.
"""

import errno
import fcntl
import os
import select
import subprocess
import tempfile
import time

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.transfer import partial as transfer_partial

LOG = logging.getLogger(__name__)

# How often a blocked read wakes up to notice a cancel.
_POLL_SECONDS = 0.5
# Module switches, so tests and benchmarks can compare both ways.
USE_SPLICE = hasattr(os, "splice")
USE_WRITE_BEHIND = True
# Start the disk write-back of every this many new bytes (WriteBehind).
WRITE_BEHIND_BYTES = transfer_partial.WRITE_BEHIND_BYTES
# splice cannot serve this pipe/file pair: fall back to read/write.
_NO_SPLICE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV)
_sync_file_range = transfer_partial.sync_file_range


def _write_behind(fd, position):
    """partial.WriteBehind with this module's switches (tests set them).

    Without it a checkpoint fsync finds everything since the previous one
    dirty and stops the stream until it is on disk (measured: ~190
    instead of ~400 MB/s for ``ssh cat`` into a file on a disk that
    fsyncs ~350 MB/s).
    """
    return transfer_partial.WriteBehind(
        fd, position, step=WRITE_BEHIND_BYTES,
        sync=_sync_file_range,
        enabled=USE_WRITE_BEHIND and _sync_file_range is not None)


class StreamProcess:
    """A helper process whose stdout is the file, from a given offset."""

    def __init__(self, argv, describe, env=None):
        self.argv = argv
        self.describe = describe
        # stderr goes to a file, not a pipe: a chatty helper must never
        # block on a pipe nobody reads while we wait on its stdout.
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            close_fds=True,
        )

    def stderr(self):
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self):
        self.stop()
        self.proc.stdout.close()
        self._stderr.close()


def pump(process, partial, offset, monitor, chunk_size, stall_timeout,
         ranges=None):
    """Move ``process``'s stdout into ``partial`` starting at ``offset``.

    ``ranges``: the stream is these sorted ``(start, end)`` ranges of the
    file one after another, each written at its own offset (what lies
    between them is not touched: it stays a hole); None: the stream is
    the file from ``offset`` on.  Bytes past the last range are counted,
    never written.

    Returns the bytes moved.  Raises MigrationCancelled (the process is
    killed) or TransferFailed when no byte arrived for ``stall_timeout``
    seconds.  The caller checks the process's exit status.
    """
    src = process.proc.stdout.fileno()
    dst = partial.fd
    try:
        # A 1 MiB pipe instead of 64 KiB: 16x fewer wake-ups per byte.
        fcntl.fcntl(src, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size: the default still works
    mover = _Mover(src, dst, chunk_size)
    write_behind = _write_behind(dst, offset)
    places = _Places(offset, ranges)
    moved = 0
    last_data = time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([src], [], [], _POLL_SECONDS)
            monitor.check_cancelled()
            if not ready:
                if time.monotonic() - last_data > stall_timeout:
                    raise exception.TransferFailed(
                        source=process.describe,
                        dest=partial.path,
                        reason="no data for %d s" % stall_timeout,
                    )
                continue
            if places.position is None:  # past the last range
                n = mover.discard()
                if n == 0:
                    return moved
                moved += n
                last_data = time.monotonic()
                continue
            n = mover.move(places.position, places.room)
            if n == 0:
                return moved
            moved += n
            position = places.advance(n)
            write_behind.written(position)
            last_data = time.monotonic()
            partial.advanced(position)
            monitor.advance(n)
    except exception.MigrationCancelled:
        process.stop()
        raise


class _Places:
    """Where the next bytes of the stream go in the file."""

    def __init__(self, offset, ranges):
        self.position = offset
        self.room = None  # bytes left in the current range; None: no end
        self._ranges = None
        if ranges is not None:
            self._ranges = iter([(start, end) for start, end in ranges
                                 if end > start])
            self._next()

    def _next(self):
        self.position, end = next(self._ranges, (None, None))
        self.room = None if end is None else end - self.position

    def advance(self, n):
        """``n`` bytes were written: the end of them."""
        self.position += n
        written = self.position
        if self.room is not None:
            self.room -= n
            if self.room == 0:
                self._next()
        return written


class _Mover:
    """Moves what the pipe holds into the file at a given offset."""

    def __init__(self, src, dst, chunk_size):
        self._src = src
        self._dst = dst
        self._chunk_size = chunk_size
        self._splice = USE_SPLICE
        self._view = None  # allocated only if splice is refused

    def move(self, position, limit=None):
        """Bytes moved (0 at the end of the stream), at most ``limit``."""
        count = self._chunk_size if limit is None else min(
            self._chunk_size, limit)
        if self._splice:
            try:
                # The kernel moves the pages; Python never touches the data
                # (measured 1-12% faster than read/write into a file, with
                # ssh's two ends on the same 2 cores).
                return os.splice(self._src, self._dst, count,
                                 offset_dst=position)
            except OSError as exc:
                if exc.errno not in _NO_SPLICE:
                    raise
                LOG.debug("splice refused (%s); using read/write", exc)
                self._splice = False
        n = os.readv(self._src, [self._buffer()[:count]])
        written = 0
        while written < n:
            written += os.pwrite(self._dst, self._view[written:n],
                                 position + written)
        return n

    def discard(self):
        """Read what the pipe holds and drop it; bytes read."""
        return os.readv(self._src, [self._buffer()])

    def _buffer(self):
        if self._view is None:
            self._view = memoryview(bytearray(self._chunk_size))
        return self._view
