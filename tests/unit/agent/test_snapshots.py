"""The snapshot plan on qcow2 files built byte by byte: which clusters it
leaves out, and where it gives up and copies the whole file."""

import struct

import pytest

from cs2os_agent import qcow2
from cs2os_agent.agent import snapshots
from cs2os_agent.common import exception

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
COPIED = 1 << 63
COMPRESSED = 1 << 62


class Image:
    """A qcow2 file in memory: cluster 0 header, 1 refcount table, 2
    refcount block, 3 snapshot table, then what the test puts there."""

    def __init__(self, clusters=32, extended_l2=False):
        self.data = bytearray(clusters * CLUSTER)
        self.l2_entry = 16 if extended_l2 else 8
        self.snapshots = []
        struct.pack_into(">4sIQIIQIIQQIIQ", self.data, 0, b"QFI\xfb", 3, 0,
                         0, CLUSTER_BITS, 1 << 30, 0, 0, 0, CLUSTER, 1, 0,
                         0)
        struct.pack_into(">QQQII", self.data, 72,
                         (1 << 4) if extended_l2 else 0, 0, 0, 4, 104)
        struct.pack_into(">Q", self.data, CLUSTER, 2 * CLUSTER)

    def l1(self, cluster, l2_clusters):
        for n, l2 in enumerate(l2_clusters):
            struct.pack_into(">Q", self.data, cluster * CLUSTER + 8 * n,
                             COPIED | l2 * CLUSTER)
        return cluster * CLUSTER, len(l2_clusters)

    def l2(self, cluster, entries):
        for n, entry in enumerate(entries):
            struct.pack_into(">Q", self.data,
                             cluster * CLUSTER + self.l2_entry * n, entry)

    def current(self, l1_cluster, l2_clusters):
        offset, size = self.l1(l1_cluster, l2_clusters)
        struct.pack_into(">IQ", self.data, 36, size, offset)

    def snapshot(self, name, l1_cluster, l2_clusters):
        offset, size = self.l1(l1_cluster, l2_clusters)
        self.snapshots.append((name.encode(), offset, size))
        table = bytearray()
        for n, (sname, l1_offset, l1_size) in enumerate(self.snapshots):
            ident = str(n + 1).encode()
            entry = struct.pack(">QIHHIIQII", l1_offset, l1_size, len(ident),
                                len(sname), 1700000000, 0, 0, 0, 16)
            entry += struct.pack(">QQ", 0, 1 << 30) + ident + sname
            table += entry + b"\0" * (-len(entry) % 8)
        self.data[3 * CLUSTER:3 * CLUSTER + len(table)] = table
        struct.pack_into(">IQ", self.data, 60, len(self.snapshots),
                         3 * CLUSTER)


class Source:
    def __init__(self, image):
        self.data = bytes(image.data)
        self.reads = []

    def describe(self):
        return "test:image"

    def size(self):
        return len(self.data)

    def read_header(self, n):
        return self.data[:n]

    def read_ranges(self, ranges):
        self.reads.append(list(ranges))
        return [self.data[o:o + n] for o, n in ranges]


def plan(image, keep=False):
    source = Source(image)
    header = qcow2.Header(1 << 30, False, snapshots=len(image.snapshots))
    return snapshots.plan(source, header, keep=keep)


def cluster(n):
    return n * CLUSTER


def skipped_clusters(result):
    return [n for start, end in result.skip
            for n in range(start // CLUSTER, -(-end // CLUSTER))]


def test_only_clusters_the_snapshots_alone_hold_are_skipped():
    image = Image()
    image.current(4, [5])  # current: L1 at 4, L2 at 5
    image.l2(5, [COPIED | cluster(10), cluster(12)])
    image.snapshot("daily", 6, [7])  # the snapshot's own L2 at 7
    image.l2(7, [cluster(11), cluster(12), cluster(13), cluster(14)])
    result = plan(image)
    # 12 is shared with the current state; 11, 13 and 14 are not.
    assert skipped_clusters(result) == [11, 13, 14]
    assert result.skip == ((cluster(11), cluster(12)),
                           (cluster(13), cluster(15)))
    assert result.skipped_bytes == 3 * CLUSTER
    assert result.drops and result.whole_copy_reason is None
    shown = result.result()
    assert shown["count"] == 1 and shown["kept"] is False
    assert shown["snapshots"] == [{
        "id": "1", "name": "daily", "date": "2023-11-14T22:13:20+00:00",
        "vm_state_size": 0}]
    assert shown["bytes_not_copied"] == 3 * CLUSTER
    assert result.fingerprint_key() == {"snapshot_data": "skipped"}


def test_an_l2_table_both_share_is_the_current_states():
    image = Image()
    image.current(4, [5])
    image.l2(5, [cluster(10)])
    image.snapshot("s", 6, [5, 7])
    image.l2(7, [cluster(11)])
    assert skipped_clusters(plan(image)) == [11]


def test_tables_are_never_skipped_whoever_points_at_them():
    image = Image()
    image.current(4, [5])
    image.l2(5, [cluster(10)])
    image.snapshot("s", 6, [7])
    # The snapshot's entries name the header, the refcount table and
    # block, the snapshot table, both L1 tables and an L2 table.
    image.l2(7, [cluster(n) for n in (0, 1, 2, 3, 4, 5, 6, 7)]
             + [cluster(11)])
    assert skipped_clusters(plan(image)) == [11]


def test_compressed_clusters_count_by_the_bytes_they_cover():
    image = Image()
    image.current(4, [5])
    # 3 sectors from the middle of cluster 12 into 13 (csize bits: 8).
    shift = 62 - (CLUSTER_BITS - 8)
    start = cluster(12) + CLUSTER - 512
    image.l2(5, [COMPRESSED | (2 << shift) | start])
    image.snapshot("s", 6, [7])
    image.l2(7, [cluster(12), cluster(13), cluster(14)])
    assert skipped_clusters(plan(image)) == [14]


def test_extended_l2_entries_are_read_at_their_width():
    image = Image(extended_l2=True)
    image.current(4, [5])
    image.l2(5, [cluster(10)])
    image.snapshot("s", 6, [7])
    image.l2(7, [cluster(11), cluster(10)])
    assert skipped_clusters(plan(image)) == [11]


def test_many_small_gaps_are_copied_to_bound_the_ranges(monkeypatch):
    monkeypatch.setattr(snapshots, "MAX_COPY_RUNS", 3)
    image = Image()
    image.current(4, [5])
    image.l2(5, [cluster(n) for n in (11, 13, 16, 20)])
    image.snapshot("s", 6, [7])
    image.l2(7, [cluster(n) for n in (10, 12, 14, 15, 17, 18, 19)])
    # Runs 10, 12, 14-15, 17-19: the two largest stay skipped.
    assert skipped_clusters(plan(image)) == [14, 15, 17, 18, 19]


@pytest.mark.parametrize("damage, reason", [
    (lambda image: image.l2(7, [cluster(11) + 512]), "a data cluster"),
    (lambda image: image.l2(7, [cluster(999)]), "a data cluster"),
    (lambda image: struct.pack_into(">Q", image.data, 3 * CLUSTER,
                                    cluster(6) + 8), "lies off"),
    (lambda image: struct.pack_into(">I", image.data, 32, 1),
     "encrypted"),
])
def test_what_it_cannot_read_is_copied_whole(damage, reason):
    image = Image()
    image.current(4, [5])
    image.l2(5, [cluster(10)])
    image.snapshot("s", 6, [7])
    image.l2(7, [cluster(11)])
    damage(image)
    result = plan(image)
    assert result.skip == ()
    assert reason in result.whole_copy_reason
    assert result.drops
    assert "whole_copy_reason" in result.result()


def test_keep_reads_only_the_snapshot_table():
    image = Image()
    image.current(4, [5])
    image.snapshot("a", 6, [7])
    image.snapshot("b", 8, [9])
    source = Source(image)
    header = qcow2.Header(1 << 30, False, snapshots=2)
    result = snapshots.plan(source, header, keep=True)
    assert [s.name for s in result.snapshots] == ["a", "b"]
    assert result.skip == () and not result.drops
    assert result.fingerprint_key() == {}
    assert source.reads == [[(3 * CLUSTER, CLUSTER)]]
    assert result.result()["kept"] is True


def test_no_snapshots_no_plan():
    result = snapshots.plan(Source(Image()), qcow2.Header(1 << 30, False))
    assert result.snapshots == () and result.result() is None


def test_keep_is_refused_where_the_snapshots_cannot_stay_right():
    v2 = qcow2.Header(64 << 20, True, snapshots=1, version=2)
    with pytest.raises(exception.InvalidSource, match="cannot grow"):
        snapshots.check_keep(v2, 128 << 20, [])
    snapshots.check_keep(v2, 64 << 20, [])  # no growth: fine
    v3 = qcow2.Header(64 << 20, True, snapshots=1)
    snapshots.check_keep(v3, 128 << 20, [])
    with pytest.raises(exception.InvalidSource, match="layers"):
        snapshots.check_keep(v3, 128 << 20, [object()])
