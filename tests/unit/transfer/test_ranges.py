"""Byte ranges: the shared helpers, the ssh dd command, the ranged pump.

ranges.py (skip checks, wanted ranges, coalescing, cutting answers back),
sshranges.py (the remote command and its batches, parsed as a POSIX shell
would) and stream.pump with ``ranges`` (each range at its own offset, the
rest left a hole), on helpers.FakeStream: no process runs.
"""

import os
import re
import shlex

import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import ranges
from cs2os_agent.transfer import ssh
from cs2os_agent.transfer import sshranges
from cs2os_agent.transfer import stream
from tests.unit.transfer.helpers import FakeStream
from tests.unit.transfer.helpers import MiB

KiB = 1024

# -- ranges.py ----------------------------------------------------------------


@pytest.mark.parametrize("offset, size, skip, expected", [
    (0, 100, (), [(0, 100)]),
    (0, 100, ((10, 20), (30, 40)), [(0, 10), (20, 30), (40, 100)]),
    (0, 100, ((0, 10), (10, 20), (90, 100)), [(20, 90)]),  # touching
    (15, 100, ((10, 20), (30, 40)), [(20, 30), (40, 100)]),  # inside one
    (25, 100, ((10, 20), (30, 40)), [(25, 30), (40, 100)]),  # between
    (0, 50, ((40, 200),), [(0, 40)]),  # past the end
    (0, 50, ((60, 70),), [(0, 50)]),  # wholly past the end
    (0, 50, ((0, 50),), []),
    (60, 50, (), []),  # offset past the end
])
def test_wanted_is_the_complement_of_skip(offset, size, skip, expected):
    assert ranges.wanted(offset, size, ranges.check_skip(skip)) == expected


@pytest.mark.parametrize("skip, words", [
    (((20, 30), (10, 15)), "sorted"),
    (((10, 30), (20, 40)), "overlap"),
    (((10, 10),), "start < end"),
    (((-1, 10),), "start < end"),
    (((0, 1.5),), "integers"),
    (((True, 5),), "integers"),
    ((5,), "(start, end)"),
    (((1, 2, 3),), "(start, end)"),
])
def test_bad_skip_refused(skip, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        ranges.check_skip(skip)


@pytest.mark.parametrize("bad", [(-1, 5), (0, -5), (0.0, 5), (1,), "ab"])
def test_bad_range_refused(bad):
    with pytest.raises(ValueError, match="range"):
        ranges.check_ranges([(0, 1), bad])


def test_check_within_names_the_range():
    ranges.check_within([(0, 10), (90, 10), (100, 0)], 100, "src")
    with pytest.raises(exception.SourceUnreadable) as err:
        ranges.check_within([(0, 10), (95, 10)], 100, "src")
    assert str(err.value) == (
        "Cannot read overlay source src: the range of 10 bytes at offset 95 "
        "(bytes 95-104) reaches past the end of the file (100 bytes)")


def test_coalesce_merges_touching_and_overlapping():
    assert ranges.coalesce([(50, 10), (0, 10), (10, 5), (3, 2), (60, 0),
                            (58, 10), (100, 1), (200, 0)]) == [
        (0, 15), (50, 68), (100, 101)]
    assert ranges.coalesce([]) == []
    assert ranges.coalesce([(0, 25), (25, 5)], max_piece=10) == [
        (0, 10), (10, 20), (20, 30)]


def test_extract_cuts_pieces_back_into_the_ranges_asked_for():
    data = bytes(range(256)) * 4
    pieces = [(0, memoryview(data)[0:10]), (10, data[10:30]),
              (100, bytearray(data[100:200]))]
    asked = [(150, 10), (5, 20), (0, 30), (100, 0), (199, 1), (100, 100)]
    assert ranges.extract(pieces, asked) == [
        data[o:o + n] for o, n in asked]
    assert all(type(x) is bytes for x in ranges.extract(pieces, asked))


def test_extract_refuses_a_gap():
    with pytest.raises(ValueError, match="byte 5"):
        ranges.extract([(0, b"abcde"), (10, b"x")], [(0, 8)])


# -- sshranges.py: the remote command -------------------------------------

STAT = ["env", "LC_ALL=C", "stat", "-L", "-c", ssh.STAT_FORMAT, "--"]
SHELL_SYNTAX = [
    "/mnt/pool/vol with space",
    "/mnt/pool/it's",
    "/mnt/pool/$(reboot)",
    "/mnt/pool/`id`;rm -rf /",
    "/mnt/pool/a\"b*c?",
]


def parse(command):
    """(path, [(start, end)]) of a command, as a POSIX shell reads it."""
    words = shlex.split(command)
    assignment = next(w for w in words if w.startswith("p="))
    path = assignment[2:].removesuffix(";")
    calls = re.findall(r"\bcs2os_dd (\d+) (\d+) &&", command)
    return path, [(int(s), int(s) + int(n)) for s, n in calls]


@pytest.mark.parametrize("path", SHELL_SYNTAX)
def test_command_reads_each_range_and_ends_with_the_stat(path):
    command = sshranges.command(path, [(0, 10), (65536, 131072)],
                                ssh.STAT_FORMAT)
    words = shlex.split(command)
    # The path is one word, once, in an assignment; every use is "$p".
    assert words[:3] == ["export", "LC_ALL=C;", "p=%s;" % path]
    assert command.count(shlex.quote(path)) == 1
    assert words[3:13] == [
        "cs2os_dd()", "{", "dd", "bs=1048576",
        "iflag=skip_bytes,count_bytes,fullblock", "status=none", "if=$p",
        "skip=$1", "count=$2", ";"]
    assert words[13:] == ["};", "cs2os_dd", "0", "10", "&&", "cs2os_dd",
                          "65536", "65536", "&&"] + STAT + ["$p", ">&2"]
    assert parse(command) == (path, [(0, 10), (65536, 131072)])


def test_command_without_ranges_only_stats():
    words = shlex.split(sshranges.command("/mnt/p/v", [], ssh.STAT_FORMAT))
    assert words[13:] == ["};"] + STAT + ["$p", ">&2"]


def test_command_over_the_limit_refused():
    many = [(n * 10 ** 12, n * 10 ** 12 + 1) for n in range(5000)]
    with pytest.raises(exception.InvalidSource, match="5000 ranges"):
        sshranges.command("/mnt/p/v", many, ssh.STAT_FORMAT, "ssh://h/v")


def test_batches_stay_under_the_budget_and_the_bytes():
    path = "/mnt/" + "'x" * 2000  # quoting makes it ~5 times longer
    pieces = [(n * 10 ** 10, n * 10 ** 10 + 64 * KiB) for n in range(5000)]
    batches = list(sshranges.batches(path, pieces, ssh.STAT_FORMAT))
    assert [p for b in batches for p in b] == pieces
    assert 2 <= len(batches) <= 8
    for batch in batches:
        command = sshranges.command(path, batch, ssh.STAT_FORMAT)
        assert len(command) <= sshranges.COMMAND_BUDGET
        assert parse(command)[1] == batch
    # The bytes of a connection are bounded too; one long piece alone.
    by_bytes = list(sshranges.batches("/p", [(0, 40), (40, 80), (80, 200),
                                             (300, 310)],
                                      ssh.STAT_FORMAT, max_bytes=100))
    assert by_bytes == [[(0, 40), (40, 80)], [(80, 200)], [(300, 310)]]


# -- stream.pump with ranges ----------------------------------------------


class Recording(partial_file.PartialFile):
    """Checks at every reported position that all before it is there."""

    def __init__(self, *args, expected, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected
        self.positions = []

    def advanced(self, position):
        self.positions.append(position)
        with open(self.path, "rb") as f:
            got = f.read(position)
        got += bytes(position - len(got))
        assert got == self.expected[:position], position
        super().advanced(position)


def holes(path):
    """The hole ranges of a file, by SEEK_HOLE/SEEK_DATA."""
    found = []
    with open(path, "rb") as f:
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


@pytest.mark.parametrize("use_splice", [True, False])
def test_pump_writes_each_range_at_its_offset(monkeypatch, tmp_path,
                                              use_splice):
    monkeypatch.setattr(stream, "USE_SPLICE", use_splice)
    source = os.urandom(8 * MiB)
    wanted = [(64 * KiB, 2 * MiB), (2 * MiB + 128 * KiB, 2 * MiB + 192 * KiB),
              (3 * MiB, 7 * MiB + 5)]
    data = b"".join(source[s:e] for s, e in wanted)
    expected = bytearray(len(source))
    for s, e in wanted:
        expected[s:e] = source[s:e]
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = Recording(dst, dst + ".json", {"f": 1}, MiB,
                     expected=bytes(expected))
    part.open(0)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        moved = stream.pump(fake, part, 0, mon, 256 * KiB, 30,
                            ranges=wanted)
        part.finish(len(source))
    finally:
        fake.close()
    assert moved == mon.done == len(data)
    with open(dst, "rb") as f:
        assert f.read() == bytes(expected)
    assert holes(dst) == [(0, 64 * KiB), (2 * MiB, 2 * MiB + 128 * KiB),
                          (2 * MiB + 192 * KiB, 3 * MiB),
                          (7 * MiB + 4 * KiB, 8 * MiB)]
    assert part.positions == sorted(part.positions)
    assert part.positions[-1] == 7 * MiB + 5
    # No chunk crossed a range's end: each range's end was reported.
    assert {2 * MiB, 2 * MiB + 192 * KiB} <= set(part.positions)


def test_pump_counts_but_never_writes_bytes_past_the_last_range(tmp_path):
    fake = FakeStream(b"a" * 100 + b"b" * 5000)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, MiB)
    part.open(0)
    mon = transfer_monitor.TransferMonitor("m", "s", 100)
    try:
        moved = stream.pump(fake, part, 0, mon, 64 * KiB, 30,
                            ranges=[(4096, 4196)])
    finally:
        fake.close()
        part.close()
    assert moved == 5100 and mon.done == 100
    with open(dst, "rb") as f:
        assert f.read() == bytes(4096) + b"a" * 100
