"""Keep the disk writing a buffered T while the mirror fills it.

Where T's file system has no O_DIRECT, the storage daemon writes T through
the page cache and ignores flushes on it (see
:mod:`cs2os_agent.agent.mirror.qsd`),
so T's bytes would sit dirty in the page cache until ``finish`` fsyncs it,
and that fsync falls in the cutover's downtime.  A thread of the agent asks
the kernel every ``interval`` seconds to start writing back whatever of T is
dirty (``sync_file_range`` WRITE: asynchronous, no durability promise),
as the transports do for their copies (``partial.WriteBehind``).
The disk then writes while the copy runs, and the fsync at ``finish`` only
has the last interval's bytes left.
"""

import ctypes
import os
import threading

from oslo_log import log as logging

from cs2os_agent.transfer import partial

LOG = logging.getLogger(__name__)

INTERVAL = 0.5


class PeriodicWriteBehind:
    """Starts the write-back of ``path``'s dirty pages periodically."""

    def __init__(self, path, interval=INTERVAL, sync=None):
        self.path = path
        self.interval = interval
        self._sync = partial.sync_file_range if sync is None else sync
        self._stop = threading.Event()
        self._thread = None
        self._fd = None
        self.calls = 0

    def start(self):
        if self._sync is None:
            LOG.debug("No sync_file_range here: no write-behind for %s",
                      self.path)
            return self
        self.stop()  # a target prepared again starts afresh
        self._stop.clear()
        # Read-only is enough: write-back is about the file's pages.
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._thread = threading.Thread(
            target=self._run, name="cs2os-write-behind", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            # Offset 0, length 0: the whole file, whatever its size now.
            if self._sync(self._fd, 0, 0, partial.SYNC_FILE_RANGE_WRITE) != 0:
                LOG.warning("sync_file_range on %s failed (errno %d): no "
                            "write-behind; finish's fsync takes longer",
                            self.path, ctypes.get_errno())
                return
            self.calls += 1

    def stop(self):
        """Idempotent; safe on one that never started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
