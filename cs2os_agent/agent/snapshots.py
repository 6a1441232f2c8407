"""Internal qcow2 snapshots: copy what the current state needs, drop them.

CloudStack's VM snapshots on KVM are internal qcow2 snapshots of the
volume file (with the guest's memory, when taken with it).  Nova cannot
use them: it boots the current state and knows nothing of snapshots inside
its disk.  So by default cs2os migrates the current state alone and does
not move the data only the snapshots need, which can be most of the file.

The plan (:func:`plan`) reads the file's own tables through the transport
(``read_ranges``): the snapshot table, every L1 table and every L2 table.
A cluster is skipped when a snapshot's L2 table points at it, the current
state's L2 tables do not, and no table lives in it.  Everything else is
copied: the header, every table, the clusters the current state reads,
and anything this module does not know (bitmaps, say).  So the copy is a
qcow2 file whose metadata is intact and whose snapshot-only clusters are
holes; :func:`drop` then has qemu-img delete the snapshots from it, which
frees those clusters without reading them, and ``qemu-img check`` judges
the result as it judges every staged file.

Anything this reading does not expect (an encrypted file, a table off
cluster boundaries or past the end, more metadata than
MAX_METADATA_BYTES) makes the plan copy the whole file: the slower way,
never a wrong one.  ``keep`` (the request's ``keep_snapshots``) copies the
whole file and leaves the snapshots in it.
"""

import dataclasses
import datetime
import re
import struct

from oslo_log import log as logging

from cs2os_agent import qemu_img
from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)

MAX_SNAPSHOTS = 65536  # QCOW_MAX_SNAPSHOTS in qemu's block/qcow2.h
# The tables read at once, and the cluster map (one byte per cluster of
# the file), are bounded: past either, the whole file is copied.
MAX_METADATA_BYTES = 256 * 1024 * 1024
MAX_MAP_CLUSTERS = 64 * 1024 * 1024
# A transport reads at most this many separate ranges (one ssh command);
# the smallest gaps are copied rather than skipped to stay within it.
MAX_COPY_RUNS = 256
# A snapshot name shown in a result, cut to this many characters.
MAX_NAME_SHOWN = 128

_OFFSET_MASK = 0x00FFFFFFFFFFFE00  # L1 and standard L2 entries
_COMPRESSED = 1 << 62
_EXTENDED_L2 = 1 << 4  # incompatible feature bit
_SNAPSHOT_ENTRY = struct.Struct(">QIHHIIQII")  # 40 bytes, then extra

# Cluster map values (OR-ed): a cluster is skipped when it is SNAPSHOT only.
_CURRENT, _SNAPSHOT, _TABLE = 1, 2, 4


class _Unplannable(Exception):
    """The file is not what this reading expects: copy it whole."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    date: str
    vm_state_size: int
    l1_offset: int
    l1_size: int

    def shown(self):
        return {"id": self.id, "name": self.name[:MAX_NAME_SHOWN],
                "date": self.date, "vm_state_size": self.vm_state_size}


@dataclasses.dataclass(frozen=True)
class Plan:
    snapshots: tuple = ()
    # Sorted (start, end) byte ranges the copy leaves out.
    skip: tuple = ()
    keep: bool = False
    # Why the whole file is copied although the snapshots are dropped.
    whole_copy_reason: str = None

    @property
    def skipped_bytes(self):
        return sum(end - start for start, end in self.skip)

    @property
    def drops(self):
        return bool(self.snapshots) and not self.keep

    def fingerprint_key(self):
        """What tells a partial copy of this plan from one of another:
        holes where snapshot data was, or not."""
        return {"snapshot_data": "skipped"} if self.skip else {}

    def result(self):
        """What the migration record says happened to the snapshots."""
        if not self.snapshots:
            return None
        result = {
            "count": len(self.snapshots),
            "snapshots": [s.shown() for s in self.snapshots[:20]],
            "kept": self.keep,
            "bytes_not_copied": self.skipped_bytes,
        }
        if self.keep:
            result["note"] = (
                "kept in the disk as the request asked (keep_snapshots); "
                "Nova does not know of them: only qemu-img can use them")
        else:
            result["note"] = (
                "Nova cannot use internal snapshots: the current state was "
                "migrated and the snapshots left behind in CloudStack")
            if self.whole_copy_reason:
                result["whole_copy_reason"] = self.whole_copy_reason
        return result


class _Header:
    """The fields of a qcow2 header this plan needs."""

    def __init__(self, data, file_size):
        (self.version, _, _, self.cluster_bits, _, self.crypt_method,
         self.l1_size, self.l1_offset, self.refcount_offset,
         self.refcount_clusters, self.nb_snapshots,
         self.snapshots_offset) = struct.unpack_from(">IQIIQIIQQIIQ", data,
                                                     4)
        # (from byte 4, after the magic; the fields skipped are the backing
        # file's offset and size and the virtual size)
        self.incompatible = (struct.unpack_from(">Q", data, 72)[0]
                             if self.version >= 3 else 0)
        self.file_size = file_size
        if not 9 <= self.cluster_bits <= 21:
            raise _Unplannable("cluster_bits %d" % self.cluster_bits)
        self.cluster_size = 1 << self.cluster_bits
        self.l2_entry_size = 16 if self.incompatible & _EXTENDED_L2 else 8


def plan(source, header, keep=False):
    """The Plan for copying ``source``, whose ``qcow2.Header`` is ``header``
    (already inspected: qcow2, no data file, no unknown features)."""
    if not header.snapshots:
        return Plan()
    if keep:
        return Plan(_read_snapshots(source, source.read_header(104),
                                    source.size()), keep=True)
    try:
        return _plan_skip(source)
    except _Unplannable as exc:
        LOG.warning("%s: copying the whole file, not only what its current "
                    "state needs: %s", source.describe(), exc)
        return Plan(_read_snapshots(source, source.read_header(104),
                                    source.size()),
                    whole_copy_reason=str(exc))


def _read_snapshots(source, data, file_size):
    """The snapshots alone, for the result; none if they cannot be read
    (the file is copied whole either way)."""
    try:
        return _snapshot_table(source, _Header(data, file_size))[0]
    except _Unplannable as exc:
        LOG.warning("%s: its snapshot table cannot be listed: %s",
                    source.describe(), exc)
        return ()


def _plan_skip(source):
    file_size = source.size()
    h = _Header(source.read_header(104), file_size)
    if h.crypt_method:
        raise _Unplannable("the file is encrypted")
    snapshots, table_size = _snapshot_table(source, h)
    clusters = -(-file_size // h.cluster_size)
    if clusters > MAX_MAP_CLUSTERS:
        raise _Unplannable("%d clusters to map" % clusters)
    cmap = bytearray(clusters)
    _mark(cmap, h, 0, h.cluster_size, _TABLE)  # the header
    _mark(cmap, h, h.snapshots_offset, table_size, _TABLE)
    _mark_refcounts(source, cmap, h)
    l1_tables = [(offset, size, current) for offset, size, current in
                 [(h.l1_offset, h.l1_size, True)]
                 + [(s.l1_offset, s.l1_size, False) for s in snapshots]
                 if size]
    l2_roles = {}  # L2 table offset -> read by the current state?
    l1_data = _read(source, h, [(o, n * 8) for o, n, _ in l1_tables],
                    "L1 table")
    for (offset, size, current), data in zip(l1_tables, l1_data,
                                             strict=True):
        _mark(cmap, h, offset, size * 8, _TABLE)
        for entry in struct.unpack(">%dQ" % size, data):
            l2 = entry & _OFFSET_MASK
            if l2:
                l2_roles[l2] = l2_roles.get(l2, False) or current
    _mark_data(source, cmap, h, l2_roles)
    skip = _skip_ranges(cmap, h, file_size)
    LOG.info("%s: %d internal snapshots; %d bytes only they need are not "
             "copied", source.describe(), len(snapshots),
             sum(end - start for start, end in skip))
    return Plan(snapshots, skip)


def _read(source, h, ranges, what):
    """The bytes of ``ranges`` (offset, length), each checked to lie in
    the file on cluster boundaries and bounded in all."""
    for offset, length in ranges:
        if offset % h.cluster_size or offset + length > h.file_size:
            raise _Unplannable("a %s at byte %d (length %d) lies off the "
                               "file's clusters" % (what, offset, length))
    if sum(length for _, length in ranges) > MAX_METADATA_BYTES:
        raise _Unplannable("more than %d bytes of %ss"
                           % (MAX_METADATA_BYTES, what))
    return source.read_ranges(list(ranges)) if ranges else []


def _mark(cmap, h, offset, length, value):
    first = offset >> h.cluster_bits
    last = min(-(-(offset + max(length, 1)) >> h.cluster_bits), len(cmap))
    for n in range(first, last):
        cmap[n] |= value


def _snapshot_table(source, h):
    """(snapshots, the table's length in bytes)."""
    if h.nb_snapshots > MAX_SNAPSHOTS:
        raise _Unplannable("%d snapshots" % h.nb_snapshots)
    # Entries are 40 bytes, extra data, id and name: read a generous guess
    # first, and more only for names that do not fit.
    length = min(max(h.nb_snapshots * 1024, h.cluster_size),
                 h.file_size - h.snapshots_offset)
    while True:
        (data,) = _read(source, h, [(h.snapshots_offset, length)],
                        "snapshot table")
        parsed = _parse_snapshots(data, h.nb_snapshots)
        if parsed is not None:
            snapshots, used = parsed
            break
        if length >= h.file_size - h.snapshots_offset:
            raise _Unplannable("the snapshot table ends past the file")
        length = min(length * 4, h.file_size - h.snapshots_offset)
    return tuple(snapshots), used


def _parse_snapshots(data, count):
    """(snapshots, bytes used), or None if ``data`` is too short."""
    snapshots, pos = [], 0
    for _ in range(count):
        if pos + _SNAPSHOT_ENTRY.size > len(data):
            return None
        (l1_offset, l1_size, id_size, name_size, date_sec, _nsec, _clock,
         vm_state_size, extra_size) = _SNAPSHOT_ENTRY.unpack_from(data, pos)
        pos += _SNAPSHOT_ENTRY.size
        if extra_size > 1024:  # QCOW_MAX_SNAPSHOT_EXTRA_DATA
            raise _Unplannable("a snapshot with %d bytes of extra data"
                               % extra_size)
        if extra_size >= 8:  # vm_state_size_large, for states over 4 GiB
            vm_state_size = struct.unpack_from(">Q", data, pos)[0]
        end = pos + extra_size + id_size + name_size
        if end > len(data):
            return None
        id_str = data[pos + extra_size:pos + extra_size + id_size]
        name = data[end - name_size:end]
        snapshots.append(Snapshot(
            id=id_str.decode("utf-8", errors="replace"),
            name=name.decode("utf-8", errors="replace"),
            date=datetime.datetime.fromtimestamp(
                date_sec, datetime.timezone.utc).isoformat(),
            vm_state_size=vm_state_size, l1_offset=l1_offset,
            l1_size=l1_size))
        pos = -(-end // 8) * 8
    return snapshots, pos


def _mark_refcounts(source, cmap, h):
    length = h.refcount_clusters * h.cluster_size
    (table,) = _read(source, h, [(h.refcount_offset, length)],
                     "refcount table")
    _mark(cmap, h, h.refcount_offset, length, _TABLE)
    for entry in struct.unpack(">%dQ" % (length // 8), table):
        block = entry & ~0x1FF
        if block:
            if block % h.cluster_size or block >= h.file_size:
                raise _Unplannable("a refcount block at byte %d" % block)
            _mark(cmap, h, block, h.cluster_size, _TABLE)


def _mark_data(source, cmap, h, l2_roles):
    """Mark each L2 table and the clusters its entries point at, a batch
    of tables at a time (memory stays MAX_METADATA_BYTES / 8 or less)."""
    per_batch = max(1, MAX_METADATA_BYTES // 8 // h.cluster_size)
    offsets = sorted(l2_roles)
    entries = h.cluster_size // h.l2_entry_size
    csize_shift = 62 - (h.cluster_bits - 8)
    csize_mask = (1 << (h.cluster_bits - 8)) - 1
    for first in range(0, len(offsets), per_batch):
        batch = offsets[first:first + per_batch]
        tables = _read(source, h, [(o, h.cluster_size) for o in batch],
                       "L2 table")
        for offset, data in zip(batch, tables, strict=True):
            _mark(cmap, h, offset, h.cluster_size, _TABLE)
            role = _CURRENT if l2_roles[offset] else _SNAPSHOT
            words = struct.unpack(">%dQ" % (len(data) // 8), data)
            for entry in words[::h.l2_entry_size // 8][:entries]:
                if not entry & ~(1 << 63 | 1):  # unallocated (or zero)
                    continue
                if entry & _COMPRESSED:
                    start = entry & ((1 << csize_shift) - 1)
                    sectors = ((entry >> csize_shift) & csize_mask) + 1
                    end = (start & ~511) + sectors * 512
                    # (its last sector may end past the file: rounded up)
                    if start >= h.file_size:
                        raise _Unplannable("compressed data past the end "
                                           "of the file, at byte %d" % start)
                    _mark(cmap, h, start, end - start, role)
                    continue
                start = entry & _OFFSET_MASK
                if start % h.cluster_size or start >= h.file_size:
                    raise _Unplannable("a data cluster at byte %d" % start)
                cmap[start >> h.cluster_bits] |= role


def _skip_ranges(cmap, h, file_size):
    """Runs of snapshot-only clusters as byte ranges; if there are more
    than MAX_COPY_RUNS - 1, only the largest (the rest is copied)."""
    runs = [(m.start() << h.cluster_bits,
             min(m.end() << h.cluster_bits, file_size))
            for m in re.finditer(bytes([_SNAPSHOT]) + b"+", cmap)]
    if len(runs) >= MAX_COPY_RUNS:
        runs = sorted(sorted(runs, key=lambda r: r[0] - r[1])
                      [:MAX_COPY_RUNS - 1])
    return tuple(runs)


def check_keep(header, virtual_size, layers):
    """Refuse ``keep_snapshots`` where the snapshots cannot stay right."""
    if layers:
        raise exception.InvalidSource(
            source="keep_snapshots",
            reason="the volume has layers between it and its template; "
            "merging them rewrites the current state only, so its "
            "internal snapshots cannot be kept")
    if header.version < 3 and header.virtual_size < virtual_size:
        raise exception.InvalidSource(
            source="keep_snapshots",
            reason="a qcow2 version 2 (compat=0.10) volume with internal "
            "snapshots cannot grow from %d to the instance disk's %d bytes "
            "(qemu-img refuses); choose a flavor of the volume's size or "
            "drop the snapshots" % (header.virtual_size, virtual_size))


def drop(path, plan_):
    """Delete every snapshot from the staged copy ``path``; then it holds
    its current state alone.  The metadata is checked first: qemu-img
    writes to it."""
    qemu_img.check(path, "qcow2")
    for snapshot in plan_.snapshots:
        qemu_img.snapshot_delete(path, "qcow2", snapshot.name)
    left = qemu_img.info(path, "qcow2").get("snapshots") or []
    if left:
        raise exception.StagedImageInvalid(
            path=path, reason="%d internal snapshots are still in it after "
            "deleting %d" % (len(left), len(plan_.snapshots)))
    LOG.info("Dropped %d internal snapshots from %s", len(plan_.snapshots),
             path)
