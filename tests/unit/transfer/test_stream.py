"""stream.pump: splice and the read/write fallback agree; write-behind.

The process is helpers.FakeStream: a thread writing into a real pipe.
"""

import os

import pytest

from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import stream
from tests.unit.transfer.helpers import FakeStream
from tests.unit.transfer.helpers import MiB


@pytest.mark.parametrize("use_splice", [True, False])
def test_pump_paths_agree(monkeypatch, tmp_path, use_splice):
    monkeypatch.setattr(stream, "USE_SPLICE", use_splice)
    monkeypatch.setattr(stream, "WRITE_BEHIND_BYTES", 256 * 1024)
    data = os.urandom(3 * MiB + 123)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, MiB)
    part.open(100)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        moved = stream.pump(fake, part, 100, mon, 256 * 1024, 30)
        part.finish(100 + len(data))
    finally:
        fake.close()
    assert moved == mon.done == len(data)
    with open(dst, "rb") as f:
        assert f.read() == b"\0" * 100 + data


def test_pump_falls_back_when_splice_is_refused(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(stream.os, "splice", refuse)
    data = os.urandom(MiB)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, MiB)
    part.open(0)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        assert stream.pump(fake, part, 0, mon, 65536, 30) == len(data)
        part.finish(len(data))
    finally:
        fake.close()
    with open(dst, "rb") as f:
        assert f.read() == data


def test_write_behind_starts_writeback_of_each_new_range(monkeypatch,
                                                         tmp_path):
    calls = []

    def record(fd, offset, nbytes, flags):
        calls.append((offset, nbytes, flags))
        return 0

    monkeypatch.setattr(stream, "_sync_file_range", record)
    monkeypatch.setattr(stream, "WRITE_BEHIND_BYTES", 256 * 1024)
    data = os.urandom(3 * MiB)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, 64 * MiB)
    part.open(4096)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        stream.pump(fake, part, 4096, mon, 256 * 1024, 30)
    finally:
        fake.close()
        part.close()
    assert calls
    # Contiguous ranges from the start offset on, write-out only (flag 2).
    assert calls[0][0] == 4096
    for (o1, n1, _), (o2, _, _) in zip(calls, calls[1:], strict=False):
        assert o1 + n1 == o2
    assert {flags for _, _, flags in calls} == {2}
    assert all(n >= 256 * 1024 for _, n, _ in calls)


def test_write_behind_failure_only_turns_it_off(monkeypatch, tmp_path):
    calls = []

    def fail(*args):
        calls.append(args)
        return -1

    monkeypatch.setattr(stream, "_sync_file_range", fail)
    monkeypatch.setattr(stream, "WRITE_BEHIND_BYTES", 64 * 1024)
    data = os.urandom(MiB)
    fake = FakeStream(data)("argv", "fake")
    dst = str(tmp_path / "dst")
    part = partial_file.PartialFile(dst, dst + ".json", {"f": 1}, 64 * MiB)
    part.open(0)
    mon = transfer_monitor.TransferMonitor("m", "s", len(data))
    try:
        assert stream.pump(fake, part, 0, mon, 64 * 1024, 30) == len(data)
        part.finish(len(data))
    finally:
        fake.close()
    assert len(calls) == 1
    with open(dst, "rb") as f:
        assert f.read() == data
