"""What several of the transfer tests share: plain names, imported.

The ssh transport's request and its fake stream (test_ssh, test_sshcmd,
test_stream), the fake libnfs (test_nfs, test_nfscopy) and the copy of a
source into a partial file (test_path, test_nfs, test_nfscopy).  The
fixtures they share are in conftest.py.
"""

import ctypes
import errno
import os
import stat
import threading
import time
import types

from cs2os_agent import transfer
from cs2os_agent.transfer import libnfs
from cs2os_agent.transfer import nfs
from cs2os_agent.transfer import partial as partial_file

MiB = 1024 * 1024


def copy(src, dst, mon, offset=0, checkpoint=64 * MiB):
    part = partial_file.PartialFile(str(dst), str(dst) + ".json",
                                    src.fingerprint(), checkpoint)
    part.open(offset)
    try:
        copied = src.copy_to(part, mon, offset)
        part.finish(src.size())
    finally:
        part.close()
    return copied


# -- ssh -------------------------------------------------------------------

PATH = "/mnt/0a1b-pool/3c4d-volume"
STAT_LINE = "81a4 1048576 1700000000.123456789 4242"
UNKNOWN = (
    "No ED25519 host key is known for [127.0.0.1]:36705 and you have "
    "requested strict checking.\r\nHost key verification failed.\r\n")


def request(**kw):
    source = {"transport": "ssh", "host": "kvm-01.example.org",
              "path": PATH}
    source.update(kw)
    return source


def make(conf, **kw):
    return transfer.get_source(request(**kw), conf)


class FakeStream:
    """A StreamProcess whose 'process' is a thread writing into a pipe.

    Like the real copy command it reports the file's stat on stderr at the
    end (``stderr``), unless told otherwise.
    """

    def __init__(self, data, returncode=0, stderr=STAT_LINE + "\n"):
        self.data, self.returncode, self._stderr = data, returncode, stderr

    def __call__(self, argv, describe, env=None):
        self.argv, self.describe = argv, describe
        r, w = os.pipe()
        self.proc = types.SimpleNamespace(
            stdout=os.fdopen(r, "rb", buffering=0),
            wait=lambda timeout=None: self.returncode,
            poll=lambda: self.returncode,
        )
        self.stopped = self.closed = False

        def feed():
            with os.fdopen(w, "wb") as f:
                try:
                    f.write(self.data)
                except BrokenPipeError:
                    pass
        self._thread = threading.Thread(target=feed, daemon=True)
        self._thread.start()
        return self

    def stderr(self):
        return self._stderr

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True
        self.proc.stdout.close()
        self._thread.join(5)


# -- nfs -------------------------------------------------------------------


class FakeLib:
    """An NFS server in memory, behind LibNfs's methods."""

    def __init__(self, files=None, mount_errors=None, readmax=0):
        self.files = files or {}  # path -> bytes, or "dir"
        self.mount_errors = mount_errors or {}  # version -> (rc, message)
        self._readmax = readmax
        self.contexts = {}
        self.open_handles = set()
        self.pread_errors = {}  # offset -> rc
        self.reads = []
        self.configured = []
        self.mounted = []
        self.read_delay = {}  # context -> seconds every read of it takes
        self.reads_by_context = {}
        self._next = 1
        self._lock = threading.Lock()  # parallel copies connect at once

    def init_context(self):
        with self._lock:
            self._next += 1
            ctx = self._next
        self.contexts[ctx] = {"error": ""}
        return ctx

    def destroy_context(self, ctx):
        del self.contexts[ctx]

    def error(self, ctx):
        return self.contexts[ctx]["error"]

    def configure(self, ctx, version, timeout_s, uid, gid, port_args):
        self.contexts[ctx]["version"] = version
        self.configured.append((version, timeout_s, uid, gid, port_args))
        return 0

    def mount(self, ctx, server, export):
        version = self.contexts[ctx]["version"]
        if version in self.mount_errors:
            rc, self.contexts[ctx]["error"] = self.mount_errors[version]
            return rc
        self.mounted.append((server, export, version))
        return 0

    def open(self, ctx, path):
        if path not in self.files:
            self.contexts[ctx]["error"] = "NFS4ERR_NOENT"
            return -errno.ENOENT, None
        if self.files[path] == "denied":
            self.contexts[ctx]["error"] = "NFS4ERR_ACCESS"
            return -errno.EACCES, None
        fh = ("fh", path)
        self.open_handles.add(fh)
        return 0, fh

    def close(self, ctx, fh):
        self.open_handles.discard(fh)
        return 0

    def fstat(self, ctx, fh):
        st = libnfs._Stat()
        data = self.files[fh[1]]
        if data == "dir":
            st.mode = stat.S_IFDIR | 0o755
        else:
            st.mode = stat.S_IFREG | 0o644
            st.size = len(data)
        st.ino, st.mtime, st.mtime_nsec = 4242, 1700000000, 123
        return 0, st

    def readmax(self, ctx):
        return self._readmax

    def pread(self, ctx, fh, offset, count, buf):
        self.reads.append((offset, count))
        with self._lock:
            self.reads_by_context[ctx] = self.reads_by_context.get(ctx, 0) + 1
        if ctx in self.read_delay:
            time.sleep(self.read_delay[ctx])
        if offset in self.pread_errors:
            self.contexts[ctx]["error"] = "nfs_service failed"
            return self.pread_errors[offset]
        data = self.files[fh[1]][offset:offset + count]
        ctypes.memmove(buf, data, len(data))
        return len(data)


def make_source(lib, path="/pool/vol", versions=(4, 3), chunk=8 * MiB,
                **kwargs):
    return nfs.NfsSource("nfs.example", "/export/primary", path, versions,
                         30, chunk, lib=lib, **kwargs)
