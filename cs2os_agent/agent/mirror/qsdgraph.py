"""What the mirror target's qemu-storage-daemon is started with and
told to build (the daemon itself: :mod:`.qsd`).

T's file node ignores flushes (``cache.no-flush``): a mirror target is
scratch until ``finish``, and a crash or a restart anywhere before that
discards it (a mirror always starts on a fresh T). QEMU's flushes cost the
copy dearly: qcow2 fdatasyncs T whenever its metadata caches depend on
each other, and the mirror flushes the target before it reports READY,
each time waiting until the disk has every byte so far. Measured here, a 1
GiB mirror to READY: 294-314 MB/s through the tunnel with flushes, 444-506
MB/s without (ssh cat 478-622 in the same runs). T is durable only after
the clean shutdown (``stop``: ``blockdev-del`` writes qcow2's metadata)
and the fsync the caller makes then (``MirrorTarget.finish``). The
source's guest flushes are not forwarded to the target by a QEMU 7.2
mirror either, so a daemon that died mid-mirror leaves a T nobody may
trust.

T is written with O_DIRECT (``cache.direct``, ``aio=native``, as Nova
opens instance disks with ``cache=none``) where its file system allows,
and the daemon's allocator keeps the buffers it frees
(:data:`MALLOC_TUNABLES`). Each NBD write arrives in a fresh buffer of up
to 1 MiB; by default glibc gives memory that size back to the kernel when
it is freed (mmap threshold, heap trim), so every request faulted in fresh
pages, and on a virtual compute node each fault may also be the
hypervisor's. A buffered T then copies every byte into fresh page-cache
pages as well. Measured here, 1 GiB to
READY, medians of 3, MB/s and the daemon's CPU-seconds per GiB:

    T buffered (write-behind), glibc defaults  tunnel 388  qsd 1.1-1.9  cat 582
    T O_DIRECT, glibc defaults                 tunnel 375  qsd 1.0-1.1  cat 649
    T O_DIRECT, buffers kept                   tunnel 532  qsd 0.4-0.5  cat 578

Only both together pay. On a file system without O_DIRECT, T stays
buffered and the agent writes it behind
(:mod:`cs2os_agent.agent.mirror.writebehind`) so that ``finish``'s fsync stays
short.

"""

import os

QMP_SOCKET = "qmp.sock"
PID_FILE = "qsd.pid"
EXPORT_ID = "exp-t"
# Node names; the export serves T_FMT.
D_FILE, D_FMT, T_FILE, T_FMT = "d-file", "d-fmt", "t-file", "t-fmt"
# glibc keeps freed blocks up to 32 MiB (an NBD request's maximum, and
# glibc's ceiling for this knob) in the heap instead of unmapping them,
# and trims the heap only above 128 MiB free; see the module docstring.
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:"
                   "glibc.malloc.trim_threshold=134217728")


def _option_value(text):
    """A value inside a QEMU ``key=value,...`` option: ',' is doubled."""
    return text.replace(",", ",,")


def build_argv(run_dir, binary):
    """The daemon's command line: a QMP monitor and a pid file, nothing else.

    The block graph is built over QMP afterwards, where file names travel
    as JSON strings and need no escaping.
    """
    qmp = os.path.join(run_dir, QMP_SOCKET)
    return [
        binary,
        "--chardev",
        "socket,id=qmp0,path=%s,server=on,wait=off" % _option_value(qmp),
        "--monitor", "chardev=qmp0",
        "--pidfile", os.path.join(run_dir, PID_FILE),
    ]


def daemon_environment(environ=None):
    """The daemon's environment: ours plus :data:`MALLOC_TUNABLES`."""
    env = dict(os.environ if environ is None else environ)
    tunables = env.get("GLIBC_TUNABLES")
    env["GLIBC_TUNABLES"] = (MALLOC_TUNABLES if not tunables
                             else tunables + ":" + MALLOC_TUNABLES)
    return env


def t_file_options(direct_io):
    """T's file node: O_DIRECT with native AIO where the file system
    allows it, buffered otherwise; flushes ignored either way."""
    if direct_io:
        return {"cache": {"direct": True, "no-flush": True}, "aio": "native"}
    return {"cache": {"direct": False, "no-flush": True}}


def graph_commands(target, base, base_format, nbd_socket, export_name,
                   direct_io=True):
    """The QMP commands (name, arguments) that build and export the graph."""
    return [
        ("blockdev-add", {"driver": "file", "node-name": D_FILE,
                          "filename": base, "read-only": True}),
        ("blockdev-add", {"driver": base_format, "node-name": D_FMT,
                          "file": D_FILE, "read-only": True}),
        # Scratch until finish() fsyncs it (see above).
        ("blockdev-add", dict({"driver": "file", "node-name": T_FILE,
                               "filename": target},
                              **t_file_options(direct_io))),
        # The format layer lives in QSD: exporting this node makes NBD
        # clients see guest data, not qcow2 bytes.
        ("blockdev-add", {"driver": "qcow2", "node-name": T_FMT,
                          "file": T_FILE, "backing": D_FMT}),
        ("nbd-server-start", {"addr": {"type": "unix",
                                       "data": {"path": nbd_socket}}}),
        ("block-export-add", {"type": "nbd", "id": EXPORT_ID,
                              "node-name": T_FMT, "name": export_name,
                              "writable": True}),
    ]


# blockdev-del in this order: T's qcow2 node first (its close writes the
# metadata; the fsync is the caller's), D last (T's node holds a reference).
CLOSE_ORDER = (T_FMT, T_FILE, D_FMT, D_FILE)
