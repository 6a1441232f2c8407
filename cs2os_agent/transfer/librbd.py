"""librados and librbd, loaded with ctypes: what the ``rbd`` transport calls.

This is the one place that knows the C interface of Ceph's client
libraries (Debian: librados2, librbd1): their signatures, how a cluster
handle is configured without any file but the ones named, and how the
asynchronous reads are awaited.  :mod:`cs2os_agent.transfer.rbd` builds the
transport on :class:`LibRbd` and never touches ctypes' function objects;
its unit tests replace :class:`LibRbd` with a fake of the same methods.

Why ctypes and not the ``rbd`` command or python3-rbd: ``rbd export``
streams every byte of the image (the holes as zeros) and ``rbd
export-diff`` cannot start at an offset, so neither resumes a copy or
reads the scattered ranges of ``read_ranges``; python3-rbd is built for
the distribution's Python only and is not installable into the agent's
virtualenv.  ctypes releases the GIL around every call, so a slow cluster
never freezes the agent's RPC threads, and the cephx key stays in the
keyring file: it is never on a command line.

Every method raises :class:`RbdError` (an OSError with the positive
errno and the call that failed) on a negative return code.
"""

import ctypes
import errno
import os

_RADOS = "librados.so.2"
_RBD = "librbd.so.1"

vp, cp = ctypes.c_void_p, ctypes.c_char_p
u64, i = ctypes.c_uint64, ctypes.c_int
# int (*cb)(uint64_t offset, size_t length, int exists, void *arg)
DIFF_CALLBACK = ctypes.CFUNCTYPE(i, u64, ctypes.c_size_t, i, vp)


class RbdError(OSError):
    """A librados/librbd call failed: ``errno`` and the call's name."""

    def __init__(self, code, call):
        super().__init__(code, "%s: %s" % (call, os.strerror(code)))
        self.call = call


class _Watcher(ctypes.Structure):
    """rbd_image_watcher_t."""

    _fields_ = [("addr", cp), ("id", ctypes.c_int64), ("cookie", u64)]


def _check(rc, call):
    if rc < 0:
        raise RbdError(-rc, call)
    return rc


class LibRbd:
    """The few librados/librbd calls the transport needs.

    Handles are opaque ``c_void_p`` values; the caller closes what it
    opened (:meth:`close_image`, :meth:`destroy_ioctx`, :meth:`shutdown`).
    """

    def __init__(self, rados, rbd):
        self._rados, self._rbd = rados, rbd
        pvp = ctypes.POINTER(vp)
        pu64 = ctypes.POINTER(u64)
        for lib, name, restype, argtypes in (
            (rados, "rados_create", i, [pvp, cp]),
            (rados, "rados_conf_read_file", i, [vp, cp]),
            (rados, "rados_conf_set", i, [vp, cp, cp]),
            (rados, "rados_connect", i, [vp]),
            (rados, "rados_shutdown", None, [vp]),
            (rados, "rados_cluster_fsid", i, [vp, ctypes.c_char_p,
                                              ctypes.c_size_t]),
            (rados, "rados_ioctx_create", i, [vp, cp, pvp]),
            (rados, "rados_ioctx_destroy", None, [vp]),
            (rados, "rados_stat", i, [vp, cp, pu64, ctypes.c_void_p]),
            (rados, "rados_get_last_version", u64, [vp]),
            (rbd, "rbd_open_read_only", i, [vp, cp, pvp, cp]),
            (rbd, "rbd_close", i, [vp]),
            (rbd, "rbd_get_size", i, [vp, pu64]),
            (rbd, "rbd_get_id", i, [vp, ctypes.c_char_p, ctypes.c_size_t]),
            (rbd, "rbd_snap_get_id", i, [vp, cp, pu64]),
            (rbd, "rbd_diff_iterate2", i,
             [vp, cp, u64, u64, ctypes.c_uint8, ctypes.c_uint8,
              DIFF_CALLBACK, vp]),
            (rbd, "rbd_watchers_list", i,
             [vp, ctypes.POINTER(_Watcher), ctypes.POINTER(ctypes.c_size_t)]),
            (rbd, "rbd_watchers_list_cleanup", None,
             [ctypes.POINTER(_Watcher), ctypes.c_size_t]),
            (rbd, "rbd_aio_create_completion", i, [vp, vp, pvp]),
            (rbd, "rbd_aio_read", i, [vp, u64, ctypes.c_size_t, vp, vp]),
            (rbd, "rbd_aio_wait_for_complete", i, [vp]),
            (rbd, "rbd_aio_get_return_value", ctypes.c_ssize_t, [vp]),
            (rbd, "rbd_aio_release", None, [vp]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes

    # -- cluster and pool -------------------------------------------------

    def connect(self, user, conf_file, settings):
        """A connected cluster handle for cephx ``user`` (without "client.").

        ``conf_file``: a ceph.conf to read first, or None for none at all
        (not even /etc/ceph/ceph.conf); ``settings``: ``(name, value)``
        pairs set after it, so they win.
        """
        cluster = vp()
        _check(self._rados.rados_create(ctypes.byref(cluster),
                                        user.encode()), "rados_create")
        try:
            if conf_file:
                _check(self._rados.rados_conf_read_file(
                    cluster, conf_file.encode()), "rados_conf_read_file")
            for name, value in settings:
                _check(self._rados.rados_conf_set(
                    cluster, name.encode(), str(value).encode()),
                    "rados_conf_set %s" % name)
            _check(self._rados.rados_connect(cluster), "rados_connect")
        except BaseException:
            self._rados.rados_shutdown(cluster)
            raise
        return cluster

    def shutdown(self, cluster):
        self._rados.rados_shutdown(cluster)

    def fsid(self, cluster):
        """The cluster's fsid: which Ceph cluster this is, whatever its
        monitors are called."""
        buf = ctypes.create_string_buffer(64)
        _check(self._rados.rados_cluster_fsid(cluster, buf, len(buf)),
               "rados_cluster_fsid")
        return buf.value.decode()

    def open_ioctx(self, cluster, pool):
        ioctx = vp()
        _check(self._rados.rados_ioctx_create(cluster, pool.encode(),
                                              ctypes.byref(ioctx)),
               "rados_ioctx_create")
        return ioctx

    def destroy_ioctx(self, ioctx):
        self._rados.rados_ioctx_destroy(ioctx)

    def object_version(self, ioctx, oid):
        """The RADOS version of object ``oid``: it grows with every write."""
        size = u64()
        _check(self._rados.rados_stat(ioctx, oid.encode(),
                                      ctypes.byref(size), None),
               "rados_stat %s" % oid)
        return self._rados.rados_get_last_version(ioctx)

    # -- image ------------------------------------------------------------

    def open_image(self, ioctx, name, snapshot=None):
        image = vp()
        _check(self._rbd.rbd_open_read_only(
            ioctx, name.encode(), ctypes.byref(image),
            snapshot.encode() if snapshot else None), "rbd_open_read_only")
        return image

    def close_image(self, image):
        self._rbd.rbd_close(image)

    def size(self, image):
        size = u64()
        _check(self._rbd.rbd_get_size(image, ctypes.byref(size)),
               "rbd_get_size")
        return size.value

    def image_id(self, image):
        buf = ctypes.create_string_buffer(64)
        _check(self._rbd.rbd_get_id(image, buf, len(buf)), "rbd_get_id")
        return buf.value.decode()

    def snap_id(self, image, snapshot):
        snap = u64()
        _check(self._rbd.rbd_snap_get_id(image, snapshot.encode(),
                                         ctypes.byref(snap)),
               "rbd_snap_get_id")
        return snap.value

    def diff(self, image, offset, length):
        """Sorted ``(offset, length)`` of the data in [offset, +length).

        From the image's creation (no "from" snapshot), parent included
        (include_parent=1), byte-exact (whole_object=0).
        """
        found = []

        def collect(ofs, n, exists, _arg):
            if exists:
                found.append((ofs, n))
            return 0

        callback = DIFF_CALLBACK(collect)  # referenced until the call ends
        _check(self._rbd.rbd_diff_iterate2(image, None, offset, length, 1,
                                           0, callback, None),
               "rbd_diff_iterate2")
        return sorted(found)

    def watchers(self, image):
        """``(client id, address)`` of every client watching the image."""
        room = 8
        while True:
            array = (_Watcher * room)()
            count = ctypes.c_size_t(room)
            rc = self._rbd.rbd_watchers_list(image, array,
                                             ctypes.byref(count))
            if rc == -errno.ERANGE:
                room = count.value
                continue
            _check(rc, "rbd_watchers_list")
            found = [(array[n].id, (array[n].addr or b"").decode(
                errors="replace")) for n in range(count.value)]
            self._rbd.rbd_watchers_list_cleanup(array, count.value)
            return found

    # -- reads --------------------------------------------------------------

    def aio_read(self, image, offset, length, buffer):
        """Start reading into ``buffer`` (a ctypes array); a completion."""
        completion = vp()
        _check(self._rbd.rbd_aio_create_completion(
            None, None, ctypes.byref(completion)), "rbd_aio_create_completion")
        rc = self._rbd.rbd_aio_read(image, offset, length, buffer,
                                    completion)
        if rc < 0:
            self._rbd.rbd_aio_release(completion)
            raise RbdError(-rc, "rbd_aio_read")
        return completion

    def aio_wait(self, completion):
        """Wait for a read started by :meth:`aio_read`: bytes read.

        The completion is released whatever the outcome.
        """
        try:
            self._rbd.rbd_aio_wait_for_complete(completion)
            return _check(self._rbd.rbd_aio_get_return_value(completion),
                          "rbd_aio_read")
        finally:
            self._rbd.rbd_aio_release(completion)


def load():
    """The libraries as a :class:`LibRbd`; OSError if not installed."""
    return LibRbd(ctypes.CDLL(_RADOS, use_errno=True),
                  ctypes.CDLL(_RBD, use_errno=True))
