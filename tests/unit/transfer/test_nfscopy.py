"""The nfs transport's copy loop (nfscopy.Copier), on helpers.FakeLib.

One connection, then several at once: blocks land out of order, a
checkpoint records only the contiguous prefix, every reader stops on an
error or a cancel.
"""

import errno
import os
import threading

import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor
from cs2os_agent.transfer import partial as partial_file
from tests.unit.transfer.helpers import FakeLib
from tests.unit.transfer.helpers import MiB
from tests.unit.transfer.helpers import copy
from tests.unit.transfer.helpers import make_source

# -- one connection --------------------------------------------------------


def test_copy_content_progress_and_holes(tmp_path):
    data = (os.urandom(MiB) + bytes(2 * MiB) + os.urandom(MiB // 2)
            + bytes(MiB))
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    with make_source(lib) as src:
        mon = monitor.TransferMonitor("m", "s", src.bytes_to_copy())
        copied = copy(src, dst, mon)
    assert copied == mon.done == len(data)
    assert dst.read_bytes() == data
    # The zero blocks were not written: they stay holes.
    assert os.stat(dst).st_blocks * 512 < 3 * MiB
    assert all(count <= MiB for _, count in lib.reads)


def test_copy_resumes_at_an_offset(tmp_path):
    data = os.urandom(3 * MiB + 100)
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    dst.write_bytes(data[:2 * MiB] + b"garbage past the checkpoint")
    with make_source(lib) as src:
        lib.reads.clear()
        mon = monitor.TransferMonitor("m", "s", src.bytes_to_copy(2 * MiB))
        copied = copy(src, dst, mon, offset=2 * MiB)
    assert copied == len(data) - 2 * MiB == mon.done
    assert lib.reads[0][0] == 2 * MiB  # nothing before the offset re-read
    assert dst.read_bytes() == data


def test_read_error_fails_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(3 * MiB)})
    lib.pread_errors[MiB] = -errno.EIO
    with make_source(lib) as src:
        with pytest.raises(exception.TransferFailed,
                           match="nfs_service failed"):
            copy(src, tmp_path / "copy",
                 monitor.TransferMonitor("m", "s", 3 * MiB))


def test_file_that_shrinks_fails_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(2 * MiB)})
    with make_source(lib) as src:
        size = src.size()
        lib.files["/pool/vol"] = lib.files["/pool/vol"][:MiB]
        src.size = lambda: size  # the size seen before it shrank
        with pytest.raises(exception.SourceUnreadable, match="shrank"):
            copy(src, tmp_path / "copy",
                 monitor.TransferMonitor("m", "s", size))


def test_cancel_stops_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(4 * MiB)})
    with make_source(lib) as src:
        mon = monitor.TransferMonitor("mig", "sync_overlay", 4 * MiB)
        real_pread = lib.pread

        def cancel_after_first(*args):
            if lib.reads:
                mon.cancel()
            return real_pread(*args)

        lib.pread = cancel_after_first
        with pytest.raises(exception.MigrationCancelled):
            copy(src, tmp_path / "copy", mon)
    assert len(lib.reads) == 2


def test_bandwidth_limit_is_the_monitors(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(2 * MiB)})
    slept = []
    with make_source(lib) as src:
        mon = monitor.TransferMonitor(
            "m", "s", 2 * MiB, max_bandwidth_mbps=8,
            clock=lambda: 0.0, sleep=slept.append)
        copy(src, tmp_path / "copy", mon)
    assert sum(slept) > 0


# -- parallel reads on several connections ---------------------------------


class RecordingPartial(partial_file.PartialFile):
    """Checks, at every position a copy reports, that all before it is
    really in the file: what a checkpoint would make durable."""

    def __init__(self, *args, expected, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected
        self.positions = []

    def advanced(self, position):
        self.positions.append(position)
        with open(self.path, "rb") as f:
            got = f.read(position)
        # Holes past the file's end read short: pad like the final size.
        got += bytes(position - len(got))
        assert got == self.expected[:position], position
        super().advanced(position)


def parallel_copy(src, dst, mon, expected, offset=0, checkpoint=MiB):
    part = RecordingPartial(str(dst), str(dst) + ".json",
                            src.fingerprint(), checkpoint,
                            expected=expected)
    part.open(offset)
    try:
        copied = src.copy_to(part, mon, offset)
        part.finish(src.size())
    finally:
        part.close()
    return copied, part


def test_parallel_copy_is_identical_and_reads_on_every_connection(tmp_path):
    data = (os.urandom(5 * MiB) + bytes(2 * MiB) + os.urandom(3 * MiB + 7)
            + bytes(MiB))
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    with make_source(lib, connections=3) as src:
        first = next(iter(lib.contexts))
        # The first connection is slow: its blocks finish out of order.
        lib.read_delay[first] = 0.02
        mon = monitor.TransferMonitor("m", "s", src.bytes_to_copy())
        copied, part = parallel_copy(src, dst, mon, data)
    assert copied == mon.done == len(data)
    assert dst.read_bytes() == data
    # The zero MiBs at 5-7 stayed a hole ...
    with open(dst, "rb") as f:
        assert os.lseek(f.fileno(), 5 * MiB, os.SEEK_HOLE) == 5 * MiB
        assert os.lseek(f.fileno(), 5 * MiB, os.SEEK_DATA) == 7 * MiB
    # ... and nothing else grew: 9 MiB of blocks written (the one at 10 MiB
    # holds 7 bytes of data), plus room for one ext4 extent-tree block,
    # which blocks landing out of order may need.
    assert os.stat(dst).st_blocks * 512 <= 9 * MiB + 4096
    # Three connections, every one of them read, all closed again.
    assert len(lib.reads_by_context) == 3
    assert all(lib.reads_by_context.values())
    assert sorted(o for o, _ in lib.reads) == list(range(0, len(data), MiB))
    # Positions only grow and end at the file's end.
    assert part.positions == sorted(part.positions)
    assert part.positions[-1] == len(data)
    assert lib.contexts == {}
    assert lib.open_handles == set()


def test_parallel_copy_resumes_from_a_checkpoint(tmp_path):
    data = os.urandom(12 * MiB + 3)
    lib = FakeLib({"/pool/vol": data})
    dst = tmp_path / "copy"
    meta = str(dst) + ".json"
    with make_source(lib, connections=4) as src:
        fingerprint = src.fingerprint()
        mon = monitor.TransferMonitor("m", "s", len(data))
        real_advance = mon.advance

        def die_after_a_checkpoint(n):
            real_advance(n)
            # Blocks finish out of order: the checkpoint can lag behind.
            if mon.done >= 7 * MiB and part._durable:
                raise RuntimeError("agent killed")

        mon.advance = die_after_a_checkpoint
        part = partial_file.PartialFile(str(dst), meta, fingerprint,
                                        2 * MiB)
        part.open(part.resume_offset())
        with pytest.raises(RuntimeError, match="agent killed"):
            src.copy_to(part, mon, 0)
        part.close()
        # Garbage past the checkpoint, as a torn write would leave.
        with open(dst, "ab") as f:
            f.write(b"torn" * 1000)
    again = partial_file.PartialFile(str(dst), meta, fingerprint, 2 * MiB)
    resumed = again.resume_offset()
    assert resumed == part._durable
    assert 2 * MiB <= resumed < 12 * MiB
    with make_source(lib, connections=4) as src:
        lib.reads.clear()
        again.open(resumed)
        copied = src.copy_to(again, monitor.TransferMonitor(
            "m", "s", len(data) - resumed), resumed)
        again.finish(src.size())
    assert copied == len(data) - resumed
    assert min(o for o, _ in lib.reads) == resumed
    assert dst.read_bytes() == data
    assert lib.contexts == {}


def test_a_failed_extra_connection_only_means_fewer(tmp_path, caplog):
    data = os.urandom(6 * MiB)
    lib = FakeLib({"/pool/vol": data})
    with make_source(lib, connections=3) as src:
        real_mount = lib.mount
        lib.mount = lambda ctx, server, export: -errno.EIO
        try:
            copied, _ = parallel_copy(
                src, tmp_path / "copy",
                monitor.TransferMonitor("m", "s", len(data)), data)
        finally:
            lib.mount = real_mount
    assert copied == len(data)
    assert (tmp_path / "copy").read_bytes() == data
    assert "reading on fewer" in caplog.text
    assert lib.contexts == {}


def test_a_read_error_on_any_connection_fails_the_copy(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(8 * MiB)})
    lib.pread_errors[5 * MiB] = -errno.EIO
    with make_source(lib, connections=3) as src:
        with pytest.raises(exception.TransferFailed,
                           match="nfs_service failed"):
            copy(src, tmp_path / "copy",
                 monitor.TransferMonitor("m", "s", 8 * MiB))
        # Every extra connection is closed again, every thread is done.
        assert len(lib.contexts) == 1
    assert not [t for t in threading.enumerate()
                if t.name.startswith("nfs-read")]


def test_parallel_cancel_stops_every_reader(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(64 * MiB)})
    with make_source(lib, connections=3) as src:
        mon = monitor.TransferMonitor("mig", "sync_overlay", 64 * MiB)
        real_advance = mon.advance

        def cancel_after_2_mib(n):
            real_advance(n)
            if mon.done >= 2 * MiB:
                mon.cancel()

        mon.advance = cancel_after_2_mib
        with pytest.raises(exception.MigrationCancelled):
            copy(src, tmp_path / "copy", mon)
        assert len(lib.contexts) == 1
    # Only the blocks already handed out were read (two per reader).
    assert len(lib.reads) <= 2 * MiB // MiB + 2 * 3
    assert not [t for t in threading.enumerate()
                if t.name.startswith("nfs-read")]


def test_parallel_copy_keeps_the_bandwidth_limit(tmp_path):
    lib = FakeLib({"/pool/vol": os.urandom(4 * MiB)})
    slept = []
    with make_source(lib, connections=3) as src:
        mon = monitor.TransferMonitor(
            "m", "s", 4 * MiB, max_bandwidth_mbps=8,
            clock=lambda: 0.0, sleep=slept.append)
        copy(src, tmp_path / "copy", mon)
    # 4 MiB at 1 MB/s on a clock that stands still: by the last block the
    # monitor asked for the whole 4.2 s.
    assert max(slept) == pytest.approx(4 * MiB / 1e6)
