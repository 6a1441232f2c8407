"""The ``rbd`` transport: the volume is an image in a Ceph RBD pool.

CloudStack's RBD primary storage (``listStoragePools`` type ``RBD``: the
pool's name as its path, the monitors in ``ipaddress``) keeps each volume
as an RBD image.  The agent reads it in process through librados/librbd
(:mod:`cs2os_agent.transfer.librbd`, ctypes; why not the ``rbd`` command
is said there), as cephx user ``[transfer] rbd_user`` with the key in
``[transfer] rbd_keyring``; nothing but the request's monitors and those
two (and ``rbd_conf`` if set) configures the connection.

What is copied is the guest's view of the image.  CloudStack creates a
volume as a clone of a protected snapshot of its template's image; the
clone itself holds only the objects the guest wrote.  The allocated
extents come from ``rbd_diff_iterate2`` with no "from" snapshot,
``include_parent`` on and ``whole_object`` off, which is what ``rbd diff``
reports: for a clone, the extents of its own objects *and* the parent
snapshot's extents the clone did not overwrite (within the overlap), so
the copy is the whole disk as the guest sees it, not just the clone's
objects; reads of those extents fall through to the parent the same way.
Holes stay holes: only those extents are read and written.  An extent is
byte-exact where BlueStore knows it, but an object written at a few places
reports from its start to its last written byte (RADOS keeps a size per
object, not a map of it), so a copy can hold some zeros a sparse file
would not.

Change detection.  RBD has no write counter: librbd updates an image's
modify timestamp at most every ``rbd_mtime_update_interval`` (60 s).  But
every writer opens the image read-write, which puts a watch on its header
object, and (with the exclusive-lock feature CloudStack and Cinder enable)
takes the lock, a write to that header object that raises its RADOS
version; so do a resize, a new snapshot, a flatten and the timestamp.  A
live image's identity is therefore its id, size, header version and the
clients watching it; a copy is refused while any client watches it (a
running VM: stop it, or name a snapshot) and accepted only if that
identity after it is the one first seen.  A named snapshot cannot change:
its identity is the image id, snapshot id and size.  This transport's own
read-only opens put no watch on the image.
"""

import ctypes
import errno
import os
import re

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.transfer import base
from cs2os_agent.transfer import librbd
from cs2os_agent.transfer import ranges as transfer_ranges
from cs2os_agent.transfer import rbdcopy

LOG = logging.getLogger(__name__)

# Pool, image, snapshot and user names: letters, digits, '_', '.', '-',
# not starting with '-' or '.'.  That keeps out what Ceph itself parses
# in a spec ('/' pool, '@' snapshot, ':' and '=' options, ',' lists) and
# anything a shell, a log or an option parser could take for something
# else; CloudStack names pools and volumes with UUIDs and words.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,126}$")
# One monitor: host name, IPv4 address or [IPv6], and an optional port.
_MONITOR_RE = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))"
    r"(?::(?P<port>[0-9]{1,5}))?$")
MAX_MONITORS = 16
# Extents are asked for one window at a time: memory stays flat in the
# size of the image.
DIFF_WINDOW = 1024 * 1024 * 1024
HEADER_PREFIX = "rbd_header."


def _invalid(reason):
    return exception.InvalidSource(source="rbd", reason=reason)


def valid_name(value, what):
    """A pool, image, snapshot or user name; InvalidSource naming it."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise _invalid("%s %r is not a valid name: 1-127 letters, digits, "
                       "'_', '.' or '-', not starting with '-' or '.'"
                       % (what, value))
    return value


def valid_monitors(value):
    """``"host[:port],..."`` as Ceph's ``mon_host`` wants it."""
    if not isinstance(value, str) or not value:
        raise _invalid("monitors must be a non-empty string "
                       "'host[:port],...'")
    entries = [m.strip() for m in value.split(",")]
    if len(entries) > MAX_MONITORS:
        raise _invalid("%d monitors; at most %d" % (len(entries),
                                                    MAX_MONITORS))
    for entry in entries:
        match = _MONITOR_RE.match(entry)
        if not match or (match.group("port") is not None
                         and not 0 < int(match.group("port")) < 65536):
            raise _invalid("monitor %r is not host[:port] (a host name, "
                           "an IPv4 address or an [IPv6] one)" % (entry,))
    return ",".join(entries)


def check_keyring(path):
    """Refuse a keyring librados would only half-report as missing."""
    if not path or not os.path.isabs(path):
        raise exception.TransportConfigInvalid(
            option="rbd_keyring", path=path,
            reason="it must be an absolute path")
    if not os.access(path, os.R_OK):
        raise exception.TransportConfigInvalid(
            option="rbd_keyring", path=path,
            reason="the file does not exist or is not readable by the "
            "agent's user")
    return path


def settings(monitors, keyring, connect_timeout, op_timeout):
    """What configures a connection, after the optional ceph.conf."""
    return [
        ("mon_host", monitors),
        ("keyring", keyring),
        ("client_mount_timeout", connect_timeout),
        ("rados_mon_op_timeout", op_timeout),
        ("rados_osd_op_timeout", op_timeout),
        # librbd stamps an image's access time into its header on a read
        # (every 60 s by default): a write to the source, and one that
        # would look like a change of it.  0: never.
        ("rbd_atime_update_interval", 0),
        # A library client in the agent: no log file, no admin socket,
        # nothing on the agent's stderr.
        ("log_file", ""),
        ("log_to_stderr", "false"),
        ("err_to_stderr", "false"),
        ("admin_socket", ""),
    ]


class Location:
    """Where an image is, as shown in messages (never a secret)."""

    def __init__(self, monitors, pool, image, snapshot, user):
        self.monitors, self.pool, self.image = monitors, pool, image
        self.snapshot, self.user = snapshot, user

    @property
    def spec(self):
        spec = "%s/%s" % (self.pool, self.image)
        return spec + ("@%s" % self.snapshot if self.snapshot else "")

    def __str__(self):
        return "rbd:%s (monitors %s)" % (self.spec, self.monitors)


def connect_error(exc, where, connect_timeout):
    """The exception for a failed connection or open: ``exc`` RbdError."""
    shown = str(where)
    if exc.call == "rados_connect":
        if exc.errno == errno.ETIMEDOUT:
            return exception.SourceUnreachable(
                "Cannot reach the Ceph monitors %s: no monitor answered "
                "and authenticated client.%s within %d s ([transfer] "
                "rbd_connect_timeout)" % (where.monitors, where.user,
                                          connect_timeout),
                host=where.monitors, port="", reason="timed out")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return exception.SourceAuthFailed(
                "The Ceph monitors %s refused cephx user client.%s (%s): "
                "the key in [transfer] rbd_keyring must be that user's"
                % (where.monitors, where.user, os.strerror(exc.errno)),
                user=where.user, host=where.monitors, port="",
                reason=os.strerror(exc.errno))
    if exc.call == "rados_conf_read_file":
        return exception.TransportConfigInvalid(
            option="rbd_conf", path="(see [transfer] rbd_conf)",
            reason=os.strerror(exc.errno))
    if exc.call.startswith("rados_conf_set"):
        return _invalid("Ceph refused the setting %s (%s)"
                        % (exc.call.split()[-1], os.strerror(exc.errno)))
    if exc.errno == errno.ENOENT:
        what = "pool" if exc.call == "rados_ioctx_create" else "image"
        return exception.SourceNotFound(
            path="%s (no such %s%s)" % (shown, what,
                                        " or snapshot" if where.snapshot
                                        and what == "image" else ""))
    if exc.errno in (errno.EACCES, errno.EPERM):
        return exception.SourceUnreadable(
            path=shown, reason="cephx user client.%s may not read it (%s)"
            % (where.user, exc.strerror))
    if exc.errno == errno.ETIMEDOUT:
        return exception.SourceUnreachable(
            "Ceph did not answer %s for %s in time" % (exc.call, shown),
            host=where.monitors, port="", reason="timed out")
    return exception.SourceUnreadable(path=shown, reason=exc.strerror)


class RbdSource(base.OverlaySource):
    """One RBD image (or snapshot of one), opened read-only."""

    transport = "rbd"

    def __init__(self, where, keyring, conf_file=None, connect_timeout=10,
                 op_timeout=120, lib=None, depth=None):
        self.where = where
        self._lib = lib if lib is not None else _load()
        self._depth = depth
        self._cluster = self._ioctx = self._image = None
        try:
            self._cluster = self._lib.connect(
                where.user, conf_file,
                settings(where.monitors, keyring, connect_timeout,
                         op_timeout))
            self._ioctx = self._lib.open_ioctx(self._cluster, where.pool)
            self._image = self._lib.open_image(self._ioctx, where.image,
                                               where.snapshot)
            self.fsid = self._lib.fsid(self._cluster)
            self.image_id = self._lib.image_id(self._image)
            self.snap_id = (self._lib.snap_id(self._image, where.snapshot)
                            if where.snapshot else None)
        except librbd.RbdError as exc:
            self.close()
            raise connect_error(exc, where, connect_timeout) from None
        except BaseException:
            self.close()
            raise
        self._probed = None  # the first identity: what a copy must match

    @classmethod
    def from_request(cls, source, conf):
        t = conf.transfer
        snapshot = source.get("snapshot")
        where = Location(
            valid_monitors(source["monitors"]),
            valid_name(source["pool"], "pool"),
            valid_name(source["image"], "image"),
            None if snapshot is None else valid_name(snapshot, "snapshot"),
            valid_name(t.rbd_user, "[transfer] rbd_user"))
        keyring = check_keyring(t.rbd_keyring)
        return cls(where, keyring, conf_file=t.rbd_conf,
                   connect_timeout=t.rbd_connect_timeout,
                   op_timeout=t.stall_timeout)

    def describe(self):
        return str(self.where)

    # -- identity -----------------------------------------------------------

    def _call(self, fn, *args):
        """A librbd call whose failure means the image cannot be read."""
        try:
            return fn(*args)
        except librbd.RbdError as exc:
            raise exception.SourceUnreadable(
                path=self.describe(), reason=str(exc)) from None

    def _identity(self):
        size = self._call(self._lib.size, self._image)
        if self.snap_id is not None:
            identity = {"size": size, "snap_id": self.snap_id}
        else:
            identity = {
                "size": size,
                "header_version": self._call(
                    self._lib.object_version, self._ioctx,
                    HEADER_PREFIX + self.image_id),
                "watchers": sorted("client.%d %s" % w for w in self._call(
                    self._lib.watchers, self._image)),
            }
        if self._probed is None:
            self._probed = identity
        return identity

    def fingerprint(self):
        identity = self._identity()
        return dict(identity, transport=self.transport, fsid=self.fsid,
                    pool=self.where.pool, image=self.where.image,
                    image_id=self.image_id, snapshot=self.where.snapshot)

    def _check_unchanged(self, error, when, **names):
        """Raise ``error`` if the image is not the one first seen."""
        before = self._probed
        after = self._identity()
        if after != before:
            raise error(reason="the image changed %s (before: %s; after: %s)"
                        % (when, _shown(before), _shown(after)), **names)

    def _check_not_in_use(self):
        """A live image a client has open may change under the copy."""
        identity = self._identity()
        if identity.get("watchers"):
            raise exception.SourceUnreadable(
                path=self.describe(), reason="the image is open by another "
                "client (watchers: %s): stop the VM that uses it, or name a "
                "snapshot" % ", ".join(identity["watchers"]))

    # -- reads ----------------------------------------------------------------

    def size(self):
        return self._identity()["size"]

    def _read(self, offset, length):
        buffer = bytearray(length)
        array = (ctypes.c_char * length).from_buffer(buffer)
        n = self._call(rbdcopy.read_into, self._lib, self._image, offset,
                       length, array)
        del array  # the bytearray may not be resized while exported
        return bytes(buffer[:n])

    def read_header(self, nbytes):
        nbytes = min(nbytes, self.size())
        return self._read(0, nbytes) if nbytes > 0 else b""

    def read_ranges(self, ranges):
        ranges = transfer_ranges.check_ranges(ranges)
        shown = self.describe()
        transfer_ranges.check_within(ranges, self.size(), shown)
        pieces = []
        for start, end in transfer_ranges.coalesce(ranges,
                                                   rbdcopy.READ_SIZE):
            data = self._read(start, end - start)
            if len(data) != end - start:
                raise exception.SourceUnreadable(
                    path=shown, reason="the image ends at byte %d, before "
                    "the end of the ranges read (%d)"
                    % (start + len(data), end))
            pieces.append((start, data))
        self._check_unchanged(exception.SourceUnreadable,
                              "while it was read", path=shown)
        return transfer_ranges.extract(pieces, ranges)

    def _extents(self, offset, skip):
        """Data extents from ``offset`` on, outside ``skip``, in order."""
        wanted = transfer_ranges.wanted(offset, self.size(),
                                        transfer_ranges.check_skip(skip))
        for start, end in wanted:
            for window in range(start, end, DIFF_WINDOW):
                stop = min(window + DIFF_WINDOW, end)
                for ofs, n in self._call(self._lib.diff, self._image,
                                         window, stop - window):
                    # librbd answers per object: clip to what was asked.
                    first, last = max(ofs, window), min(ofs + n, stop)
                    if last > first:
                        yield first, last - first

    def bytes_to_copy(self, offset=0, skip=()):
        return sum(n for _, n in self._extents(offset, skip))

    def copy_to(self, partial, monitor, offset=0, skip=()):
        if self.snap_id is None:
            self._check_not_in_use()
        copier = rbdcopy.Copier(self._lib, self._image, self.describe(),
                                depth=self._depth or rbdcopy.DEPTH)
        try:
            moved = copier.copy(self._extents(offset, skip), partial,
                                monitor, offset)
        except librbd.RbdError as exc:
            raise exception.TransferFailed(
                source=self.describe(), dest=partial.path,
                reason=str(exc)) from None
        except OSError as exc:  # this side: a full disk, an I/O error
            raise exception.TransferFailed(
                source=self.describe(), dest=partial.path,
                reason=exc.strerror or str(exc)) from None
        self._check_unchanged(exception.TransferFailed, "during the copy",
                              source=self.describe(), dest=partial.path)
        LOG.debug("Copied %d bytes of %s", moved, self.describe())
        return moved

    def close(self):
        if self._image is not None:
            self._lib.close_image(self._image)
            self._image = None
        if self._ioctx is not None:
            self._lib.destroy_ioctx(self._ioctx)
            self._ioctx = None
        if self._cluster is not None:
            self._lib.shutdown(self._cluster)
            self._cluster = None


def _shown(identity):
    return ", ".join("%s %s" % (k.replace("_", " "), identity[k])
                     for k in sorted(identity))


def _load():
    try:
        return librbd.load()
    except OSError as exc:
        raise exception.TransportConfigInvalid(
            option="(rbd transport)", path="librbd.so.1",
            reason="Ceph's client libraries are not installed on this node "
            "(apt-get install librbd1): %s" % exc) from None
