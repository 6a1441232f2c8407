"""read_ranges and copies with ``skip``, through every transport, no server.

path on real local files; nfs on helpers.FakeLib; ssh with ``sshcmd.run``
and the stream replaced by fakes that answer the dd command the way the
remote shell would (they parse it).  The same over a real sshd and a real
nfs-ganesha: tests/functional/test_transport_{ssh,nfs}.py.
"""

import errno
import hashlib
import os
import re
import shlex

import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import path
from cs2os_agent.transfer import ranges as transfer_ranges
from cs2os_agent.transfer import sshcmd
from cs2os_agent.transfer import stream
from tests.unit.transfer.helpers import FakeLib
from tests.unit.transfer.helpers import FakeStream
from tests.unit.transfer.helpers import MiB
from tests.unit.transfer.helpers import make
from tests.unit.transfer.helpers import make_source
from tests.unit.transfer.test_ranges import Recording
from tests.unit.transfer.test_ranges import holes
from tests.unit.transfer.test_ranges import parse

BLOCK = 64 * 1024
REAL = "/mnt/0a1b-pool/3c4d-volume"


def blocks(count, tail=b""):
    """``count`` distinct, never-zero 64 KiB blocks (then ``tail``)."""
    return b"".join(hashlib.sha256(b"%d" % i).digest() * (BLOCK // 32)
                    for i in range(count)) + tail


DATA = blocks(40, tail=b"end")  # 40 blocks and 3 bytes
# Blocks 2-4, 10, 11-12 (touching), 30-40 (to the end) are snapshot data.
SKIP = ((2 * BLOCK, 5 * BLOCK), (10 * BLOCK, 11 * BLOCK),
        (11 * BLOCK, 13 * BLOCK), (30 * BLOCK, len(DATA)))
RANGES = [(5 * BLOCK, BLOCK), (0, 10), (0, 10), (BLOCK - 5, 10),
          (3 * BLOCK, 2 * BLOCK), (4 * BLOCK, BLOCK), (len(DATA) - 3, 3),
          (7, 0), (len(DATA), 0), (17 * BLOCK + 1, 3 * BLOCK)]


def expected_copy(data, offset, skip):
    """What the partial file holds after the copy: zeros where skipped."""
    out = bytearray(data)
    for start, end in skip:
        out[max(start, offset):end] = bytes(max(end - max(start, offset), 0))
    return bytes(out)


def crashed_copy(dst, data, offset, skip):
    """What a copy killed past ``offset`` leaves: the wanted bytes before
    it (the skipped ones are holes), then a torn write where it went on."""
    with open(dst, "wb") as f:
        for start, end in transfer_ranges.wanted(0, offset, skip):
            os.pwrite(f.fileno(), data[start:end], start)
        start, end = transfer_ranges.wanted(offset, len(data), skip)[0]
        os.pwrite(f.fileno(), (b"torn" * 9999)[:end - start], start)


def copy_with(src, dst, data, offset=0, skip=(), part_cls=None):
    """Copy ``src`` into ``dst`` from ``offset``; (bytes moved, partial)."""
    kwargs = {"expected": expected_copy(data, 0, skip)} if part_cls else {}
    part = (part_cls or partial_file.PartialFile)(
        str(dst), str(dst) + ".json", src.fingerprint(), 4 * BLOCK,
        **kwargs)
    part.open(offset)
    mon = monitor.TransferMonitor("m", "s", src.bytes_to_copy(offset, skip))
    try:
        moved = src.copy_to(part, mon, offset, skip)
        part.finish(src.size())
    finally:
        part.close()
    assert moved == mon.done == src.bytes_to_copy(offset, skip)
    return moved, part


def check_copy(dst, data, skip, moved, offset=0):
    assert open(dst, "rb").read() == expected_copy(data, 0, skip)
    # Every skipped range is a hole, not written zeros (4 KiB blocks).
    found = holes(dst)
    for start, end in skip:
        start = -(-start // 4096) * 4096
        assert any(h <= start and end <= e for h, e in found
                   ) or end - start < 4096, (start, end, found)
    assert moved == transfer_ranges.total(transfer_ranges.wanted(
        offset, len(data), skip))


def resumed_copies_agree(tmp_path, make_src, data, skip):
    """A copy resumed inside a skipped and inside a wanted range."""
    for offset in (3 * BLOCK + 100, 7 * BLOCK + 100):
        dst = tmp_path / ("resumed-%d" % offset)
        crashed_copy(dst, data, offset, skip)
        with make_src() as src:
            moved, _ = copy_with(src, dst, data, offset, skip)
        check_copy(dst, data, skip, moved, offset)


# -- path --------------------------------------------------------------------


@pytest.fixture
def path_src(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(DATA)

    def open_():
        return path.PathSource(str(src), [str(tmp_path)], chunk_size=BLOCK)
    return open_


def test_path_read_ranges(path_src):
    with path_src() as src:
        assert src.read_ranges(RANGES) == [DATA[o:o + n] for o, n in RANGES]
        assert src.read_ranges([]) == []
        with pytest.raises(exception.SourceUnreadable,
                           match="range of 4 bytes at offset %d"
                           % (len(DATA) - 3)):
            src.read_ranges([(0, 1), (len(DATA) - 3, 4)])
        with pytest.raises(ValueError):
            src.read_ranges([(-1, 4)])


def test_path_copy_with_skip(tmp_path, path_src):
    with path_src() as src:
        moved, part = copy_with(src, tmp_path / "dst", DATA, skip=SKIP,
                                part_cls=Recording)
    check_copy(tmp_path / "dst", DATA, SKIP, moved)
    assert part.positions == sorted(part.positions)
    resumed_copies_agree(tmp_path, path_src, DATA, SKIP)


def test_path_skip_of_nothing_is_the_plain_copy(tmp_path, path_src):
    with path_src() as src:
        moved, _ = copy_with(src, tmp_path / "dst", DATA, skip=())
        assert moved == len(DATA) == src.bytes_to_copy(0, ((10**9, 10**10),))
        with pytest.raises(ValueError, match="sorted"):
            src.bytes_to_copy(0, ((20, 30), (0, 10)))


# -- nfs ---------------------------------------------------------------------


def test_nfs_read_ranges():
    lib = FakeLib({"/pool/vol": DATA})
    with make_source(lib, chunk=BLOCK) as src:
        src.fingerprint()
        lib.reads.clear()
        assert src.read_ranges(RANGES) == [DATA[o:o + n] for o, n in RANGES]
        # Touching and overlapping ranges were read once, in blocks.
        assert sorted(lib.reads) == [
            (0, 10), (BLOCK - 5, 10), (3 * BLOCK, BLOCK),
            (4 * BLOCK, BLOCK), (5 * BLOCK, BLOCK), (17 * BLOCK + 1, BLOCK),
            (18 * BLOCK + 1, BLOCK), (19 * BLOCK + 1, BLOCK),
            (len(DATA) - 3, 3)]
        lib.reads.clear()
        with pytest.raises(exception.SourceUnreadable,
                           match="reaches past the end"):
            src.read_ranges([(len(DATA), 1)])
        assert lib.reads == []  # refused before reading
        lib.pread_errors[BLOCK] = -errno.EIO
        with pytest.raises(exception.SourceUnreadable,
                           match="nfs_service failed"):
            src.read_ranges([(BLOCK, 10)])


def test_nfs_read_ranges_of_a_changed_file():
    lib = FakeLib({"/pool/vol": DATA})
    real_fstat = lib.fstat
    with make_source(lib) as src:
        src.fingerprint()

        def touched(ctx, fh):
            rc, st = real_fstat(ctx, fh)
            st.mtime_nsec += 1 if lib.reads else 0
            return rc, st
        lib.fstat = touched
        with pytest.raises(exception.SourceUnreadable,
                           match="changed while it was read"):
            src.read_ranges([(0, 10)])


@pytest.mark.parametrize("connections", [1, 3])
def test_nfs_copy_with_skip(tmp_path, connections):
    lib = FakeLib({"/pool/vol": DATA})

    def open_():
        return make_source(lib, chunk=BLOCK, connections=connections)

    with open_() as src:
        lib.read_delay[next(iter(lib.contexts))] = 0.002  # out of order
        moved, part = copy_with(src, tmp_path / "dst", DATA, skip=SKIP,
                                part_cls=Recording)
        lib.read_delay.clear()
    check_copy(tmp_path / "dst", DATA, SKIP, moved)
    assert part.positions == sorted(part.positions)
    # Not a byte of a skipped range was read.
    for offset, count in lib.reads:
        assert not any(s < offset + count and offset < e for s, e in SKIP)
    resumed_copies_agree(tmp_path, open_, DATA, SKIP)
    assert lib.contexts == {}


# -- ssh ---------------------------------------------------------------------


def probe_out(data):
    return ("81a4 %d 1700000000.123456789 4242\n" % len(data)).encode() + (
        REAL.encode() + b"\0" + data[:2 * MiB])


class Shell:
    """sshcmd.run for the probe and the dd commands, on ``data``."""

    def __init__(self, data, stat=None):
        self.data = data
        self.stat = stat or "81a4 %d 1700000000.123456789 4242" % len(data)
        self.commands = []

    def __call__(self, argv, timeout):
        command = argv[-1]
        self.commands.append(command)
        if shlex.split(command)[2] == "stat":
            return 0, probe_out(self.data), ""
        path, wanted = parse(command)
        assert path == REAL
        return 0, b"".join(self.data[s:e] for s, e in wanted), (
            "some noise\n%s\n" % self.stat)


class DdStream(FakeStream):
    """The stream of a copy: what the command (parsed) would send."""

    def __init__(self, source, stderr=None, **kwargs):
        stat = "81a4 %d 1700000000.123456789 4242\n" % len(source)
        super().__init__(b"", stderr=stderr or stat, **kwargs)
        self.source = source

    def __call__(self, argv, describe, env=None):
        command = argv[-1]
        if "cs2os_dd" in command:
            self.data = b"".join(self.source[s:e]
                                 for s, e in parse(command)[1])
        else:  # cat or tail -c +N
            start = re.search(r"tail -c \+(\d+)", command)
            self.data = self.source[int(start.group(1)) - 1 if start else 0:]
        return super().__call__(argv, describe, env)


@pytest.fixture
def shell(monkeypatch):
    def install(data, **kwargs):
        fake = Shell(data, **kwargs)
        monkeypatch.setattr(sshcmd, "run", fake)
        return fake
    return install


def test_ssh_read_ranges_in_few_connections(conf, shell):
    fake = shell(DATA)
    src = make(conf)
    assert src.read_ranges(RANGES) == [DATA[o:o + n] for o, n in RANGES]
    assert len(fake.commands) == 2  # the probe and one dd command
    # 5000 ranges, unordered, some repeated and touching.
    many = [((i * 7919) % 600 * 997, 500 + i % 3) for i in range(5000)]
    big = blocks(10)
    fake = shell(big)
    src = make(conf)
    assert src.read_ranges(many) == [big[o:o + n] for o, n in many]
    assert len(fake.commands) <= 4
    assert all(len(c) < 64 * 1024 for c in fake.commands)


def test_ssh_read_ranges_refusals(conf, shell):
    fake = shell(DATA)
    src = make(conf)
    with pytest.raises(exception.SourceUnreadable, match="past the end"):
        src.read_ranges([(len(DATA) - 1, 2)])
    assert len(fake.commands) == 1  # only the probe
    fake.data = DATA[:-1]  # the file shrank after the probe
    with pytest.raises(exception.SourceUnreadable,
                       match="2 bytes arrived, 3 expected"):
        src.read_ranges([(len(DATA) - 3, 3)])
    fake.data, fake.stat = DATA, "81a4 %d 1700000001.0 4242" % len(DATA)
    with pytest.raises(exception.SourceUnreadable,
                       match="changed while it was read"):
        src.read_ranges([(0, 3)])


def test_ssh_read_ranges_remote_errors_are_typed(conf, monkeypatch):
    def run(argv, timeout):
        if shlex.split(argv[-1])[2] == "stat":
            return 0, probe_out(DATA), ""
        return 1, b"", "dd: failed to open '%s': Permission denied" % REAL
    monkeypatch.setattr(sshcmd, "run", run)
    with pytest.raises(exception.SourceUnreadable, match="Permission"):
        make(conf).read_ranges([(0, 3)])


@pytest.fixture
def dd_stream(monkeypatch):
    def install(data, **kwargs):
        fake = DdStream(data, **kwargs)
        monkeypatch.setattr(stream, "StreamProcess", fake)
        return fake
    return install


@pytest.mark.parametrize("use_splice", [True, False])
def test_ssh_copy_with_skip(conf, shell, dd_stream, tmp_path, monkeypatch,
                            use_splice):
    monkeypatch.setattr(stream, "USE_SPLICE", use_splice)
    shell(DATA)
    fake = dd_stream(DATA)
    moved, part = copy_with(make(conf), tmp_path / "dst", DATA, skip=SKIP,
                            part_cls=Recording)
    check_copy(tmp_path / "dst", DATA, SKIP, moved)
    assert parse(fake.argv[-1])[1] == transfer_ranges.wanted(
        0, len(DATA), SKIP)
    resumed_copies_agree(tmp_path, lambda: make(conf), DATA, SKIP)


def test_ssh_copy_skipping_nothing_streams_the_file(conf, shell, dd_stream,
                                                    tmp_path):
    shell(DATA)
    fake = dd_stream(DATA)
    moved, _ = copy_with(make(conf), tmp_path / "dst", DATA,
                         skip=((len(DATA), len(DATA) + 5),))
    assert moved == len(DATA)
    assert shlex.split(fake.argv[-1])[2] == "cat"


def test_ssh_copy_with_skip_checks_count_and_stat(conf, shell, dd_stream,
                                                  tmp_path):
    shell(DATA)
    dd_stream(DATA[:-1])  # the file shrank
    with pytest.raises(exception.TransferFailed, match="arrived"):
        copy_with(make(conf), tmp_path / "dst", DATA, skip=SKIP[:2])
    dd_stream(DATA, stderr="81a4 1 1.0 1\n")
    with pytest.raises(exception.TransferFailed, match="changed during"):
        copy_with(make(conf), tmp_path / "dst", DATA, skip=SKIP[:2])


def test_ssh_copy_of_nothing_but_skipped_data(conf, shell, dd_stream,
                                             tmp_path):
    shell(DATA)
    fake = dd_stream(DATA)
    moved, _ = copy_with(make(conf), tmp_path / "dst", DATA,
                         skip=((0, len(DATA)),))
    assert moved == 0
    assert parse(fake.argv[-1])[1] == []  # only the stat after
    assert holes(tmp_path / "dst") == [(0, len(DATA))]


def test_ssh_copy_with_too_many_ranges_refused(conf, shell):
    shell(DATA)
    skip = tuple((i * 10, i * 10 + 5) for i in range(1100))
    with pytest.raises(exception.InvalidSource, match="1100 ranges"):
        make(conf).bytes_to_copy(0, skip)
