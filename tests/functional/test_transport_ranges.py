"""Ranged reads and copies that skip ranges, on real files and servers.

What a qcow2 file with internal snapshots needs of a transport: reading
its tables at random offsets (``read_ranges``) and copying everything but
the snapshots' data, which stays a hole in the copy (``copy_to`` with
``skip``).  The checks here run the transports in this process on a file
whose every 64 KiB block is different: the ``path`` transport below, the
``ssh`` one against the real sshd of test_transport_ssh.py and the ``nfs``
one against the real nfs-ganesha of test_transport_nfs.py (their servers,
their fixtures).  Every check is on the bytes: the copied ranges equal the
source, the skipped ones read as zeros and are holes (SEEK_HOLE), the bytes
moved are what ``bytes_to_copy`` said, and a copy resumed inside a skipped
range or inside a copied one gives the same file.
"""

import hashlib
import os
import random

import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import path as path_transport
from cs2os_agent.transfer import ranges
from cs2os_agent.transfer import ssh
from cs2os_agent.transfer import sshcmd

KiB = 1024
BLOCK = 64 * KiB
BLOCKS = 160  # 10 MiB
TAIL = b"the last bytes, not a whole block"


def make_file(directory, name="overlay"):
    """A file of distinct, never-zero 64 KiB blocks, but one 1 MiB hole
    (blocks 40-55), and a short tail: (path, its bytes)."""
    os.makedirs(directory, exist_ok=True)
    filename = os.path.join(directory, name)
    data = bytearray()
    for i in range(BLOCKS):
        block = hashlib.sha256(b"block %d" % i).digest() * (BLOCK // 32)
        data += bytes(BLOCK) if 40 <= i < 56 else block
    data += TAIL
    with open(filename, "wb") as f:
        for i in range(0, len(data), BLOCK):
            if 40 * BLOCK <= i < 56 * BLOCK:
                continue  # left a hole
            os.pwrite(f.fileno(), data[i:i + BLOCK], i)
        f.truncate(len(data))
    os.chmod(filename, 0o644)
    return filename, bytes(data)


def skip_of(size):
    """Snapshot data: single blocks, a run, touching ranges, one unaligned,
    one across the source's hole, and the end of the file."""
    return ((BLOCK, 2 * BLOCK), (5 * BLOCK, 9 * BLOCK),
            (9 * BLOCK, 10 * BLOCK), (20 * BLOCK + 100, 24 * BLOCK - 100),
            (50 * BLOCK, 60 * BLOCK), (100 * BLOCK, 101 * BLOCK),
            (150 * BLOCK, size))


def expected_copy(data, skip):
    out = bytearray(data)
    for start, end in skip:
        out[start:end] = bytes(end - start)
    return bytes(out)


def holes(filename):
    found = []
    with open(filename, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            if hole >= size:
                break
            try:
                pos = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:
                pos = size
            found.append((hole, pos))
    return found


def assert_holes(filename, skip):
    """Every skipped range (its whole 4 KiB blocks) is a hole."""
    found = holes(filename)
    for start, end in skip:
        start, end = -(-start // 4096) * 4096, end // 4096 * 4096
        if os.path.getsize(filename) <= end:
            end = os.path.getsize(filename)
        assert any(h <= start and end <= e for h, e in found), (
            start, end, found)


class Recording(partial_file.PartialFile):
    """At every position a copy reports, all before it is in the file."""

    def __init__(self, *args, expected, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected
        self.positions = []

    def advanced(self, position):
        assert not self.positions or position >= self.positions[-1]
        self.positions.append(position)
        with open(self.path, "rb") as f:
            got = f.read(position)
        got += bytes(position - len(got))
        assert got == self.expected[:position], position
        super().advanced(position)


def copy(src, dst, data, skip, offset=0):
    """One copy into ``dst`` as the agent makes it; the bytes moved."""
    part = Recording(dst, dst + ".json", src.fingerprint(), 512 * KiB,
                     expected=expected_copy(data, skip))
    part.open(offset)
    total = src.bytes_to_copy(offset, skip)
    mon = monitor.TransferMonitor("m", "s", total)
    try:
        moved = src.copy_to(part, mon, offset, skip)
        part.finish(src.size())
    finally:
        part.close()
    assert moved == mon.done == total
    return moved


def crashed_copy(dst, data, offset, skip):
    """A copy killed after ``offset``: the wanted bytes before it, holes
    where skipped, garbage where it went on."""
    with open(dst, "wb") as f:
        for start, end in ranges.wanted(0, offset, skip):
            os.pwrite(f.fileno(), data[start:end], start)
        start, end = ranges.wanted(offset, len(data), skip)[0]
        os.pwrite(f.fileno(), os.urandom(min(end - start, 300 * KiB)),
                  start)


def check_skipping_copies(open_source, data, workdir, name):
    """A copy with skip, and two resumed ones, all byte for byte."""
    skip = skip_of(len(data))
    wanted = ranges.wanted(0, len(data), skip)
    dst = os.path.join(workdir, "%s-copy" % name)
    with open_source() as src:
        moved = copy(src, dst, data, skip)
        if src.transport != "path":  # path moves data only, not the hole
            assert moved == ranges.total(wanted)
    with open(dst, "rb") as f:
        assert f.read() == expected_copy(data, skip)
    assert_holes(dst, skip)
    # Resumed inside a skipped range and inside a copied one.
    for offset in (6 * BLOCK + 4321, 30 * BLOCK + 777):
        resumed = os.path.join(workdir, "%s-resumed-%d" % (name, offset))
        crashed_copy(resumed, data, offset, skip)
        with open_source() as src:
            moved = copy(src, resumed, data, skip, offset)
            if src.transport != "path":
                assert moved == ranges.total(ranges.wanted(
                    offset, len(data), skip))
        with open(resumed, "rb") as f:
            assert f.read() == expected_copy(data, skip)
        assert_holes(resumed, skip)
    # skip=(): the whole file, as before.
    with open_source() as src:
        whole = os.path.join(workdir, "%s-whole" % name)
        copy(src, whole, data, ())
    with open(whole, "rb") as f:
        assert f.read() == data


def many_ranges(size, count, seed=7):
    """``count`` ranges in no order: 64 KiB tables, adjacent ones,
    overlapping ones, small ones, empty ones, the last byte."""
    rnd = random.Random(seed)
    out = [(0, BLOCK), (BLOCK, BLOCK), (BLOCK // 2, BLOCK), (size - 1, 1),
           (size, 0), (3, 0), (40 * BLOCK - 10, 20)]
    while len(out) < count:
        length = rnd.choice((BLOCK, 4 * KiB, 512, 17, 2 * BLOCK + 3))
        out.append((rnd.randrange(0, size - length), length))
    rnd.shuffle(out)
    return out


def check_ranged_reads(src, data, count=500):
    asked = many_ranges(len(data), count)
    got = src.read_ranges(asked)
    assert len(got) == len(asked)
    for (offset, length), piece in zip(asked, got, strict=True):
        assert piece == data[offset:offset + length], (offset, length)
    assert src.read_ranges([]) == []
    with pytest.raises(exception.SourceUnreadable,
                       match="at offset %d .* past the end" % (len(data) - 5)):
        src.read_ranges([(0, 10), (len(data) - 5, 6)])


def ssh_source(server, filename, roots, user="root"):
    """The ssh transport in this process, logging in to the test sshd
    (tools/testbed/sshd.py) with its client key and known_hosts."""
    options = sshcmd.SshOptions(
        private_key_file=server.client_key,
        known_hosts_file=server.known_hosts, connect_timeout=10,
        stall_timeout=30, chunk_size=1024 * KiB)
    target = sshcmd.SshTarget(host=server.host, port=server.port, user=user,
                              path=filename)
    return ssh.SshSource(target, options, roots)


# -- path --------------------------------------------------------------------


@pytest.fixture
def path_file(workdir):
    directory = os.path.join(workdir, "ranges-path")
    return directory, make_file(directory)


def open_path(directory, filename):
    return path_transport.PathSource(filename, [directory],
                                     chunk_size=256 * KiB)


def test_path_read_ranges(path_file):
    directory, (filename, data) = path_file
    with open_path(directory, filename) as src:
        check_ranged_reads(src, data, count=5000)


def test_path_copies_around_skipped_ranges(path_file, workdir):
    directory, (filename, data) = path_file
    check_skipping_copies(lambda: open_path(directory, filename), data,
                          workdir, "path")
    # Only data is read: blocks 40-49 of the source's hole (50-55 are
    # skipped anyway) are not in the count either.
    skip = skip_of(len(data))
    with open_path(directory, filename) as src:
        assert src.bytes_to_copy(0, skip) == ranges.total(
            ranges.wanted(0, len(data), skip)) - 10 * BLOCK
