"""The file a copy writes into, and how far it is known to be durable.

A copy lands in ``disk.cs2os-staged.part``; next to it a small JSON file
records which source it is a copy of and up to which offset its bytes were
fsynced.  An agent killed mid-copy (or a node that lost power) resumes from
that offset on the next ``sync_overlay`` of the same, unchanged source; a
different or changed source starts over.  Nothing here ever makes a partial
file look finished: only ``overlay.stage`` renames it, after verification.
"""

import json
import os

from oslo_log import log as logging

from cs2os_agent.common import fileutils

LOG = logging.getLogger(__name__)


class PartialFile:
    def __init__(self, path, meta_path, fingerprint, checkpoint_bytes):
        self.path = path
        self.meta_path = meta_path
        self.fingerprint = fingerprint
        self.checkpoint_bytes = checkpoint_bytes
        self.fd = None
        self._durable = 0

    def resume_offset(self):
        """Where a copy of ``fingerprint`` can continue; 0 starts over.

        Starting over removes a partial copy of anything else.
        """
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
            size = os.path.getsize(self.path)
        except (OSError, ValueError):
            meta, size = {}, 0
        if meta.get("source") == self.fingerprint and size:
            self._durable = min(int(meta.get("durable", 0)), size)
        else:
            fileutils.remove_if_exists(self.path)
            self._durable = 0
        self._write_meta()
        return self._durable

    def open(self, offset):
        """Open for writing; bytes past ``offset`` are dropped."""
        self.fd = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        os.ftruncate(self.fd, offset)
        return self.fd

    def advanced(self, position):
        """Called by a transport as it writes; checkpoints now and then."""
        if position - self._durable >= self.checkpoint_bytes:
            os.fsync(self.fd)
            self._durable = position
            self._write_meta()

    def finish(self, size):
        """Give the copy its final size and make all of it durable."""
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self):
        self.close()
        fileutils.remove_if_exists(self.path)
        fileutils.remove_if_exists(self.meta_path)

    def _write_meta(self):
        fileutils.write_json_atomic(
            self.meta_path,
            {"source": self.fingerprint, "durable": self._durable})
