import json
import os

from cs2os_agent.transfer import partial

MiB = 1024 * 1024
SOURCE = {"transport": "path", "path": "/mnt/p/v", "size": 10}


def make(tmp_path, fingerprint=SOURCE, checkpoint=MiB):
    return partial.PartialFile(str(tmp_path / "part"),
                               str(tmp_path / "part.json"),
                               fingerprint, checkpoint)


def write(part, position, nbytes):
    os.pwrite(part.fd, b"x" * nbytes, position)
    part.advanced(position + nbytes)


def test_fresh_copy_starts_at_zero_and_records_its_source(tmp_path):
    part = make(tmp_path)
    assert part.resume_offset() == 0
    meta = json.load(open(tmp_path / "part.json"))
    assert meta == {"source": SOURCE, "durable": 0}


def test_checkpoints_make_progress_resumable(tmp_path):
    part = make(tmp_path)
    part.open(part.resume_offset())
    write(part, 0, MiB // 2)
    assert json.load(open(tmp_path / "part.json"))["durable"] == 0
    write(part, MiB // 2, MiB)
    assert json.load(open(tmp_path / "part.json"))["durable"] == MiB + MiB // 2
    write(part, MiB + MiB // 2, 100)  # after the last checkpoint
    part.close()  # the agent dies here
    again = make(tmp_path)
    assert again.resume_offset() == MiB + MiB // 2
    again.open(MiB + MiB // 2)
    # Bytes after the checkpoint are dropped, not trusted.
    assert os.path.getsize(tmp_path / "part") == MiB + MiB // 2
    again.close()


def test_changed_source_starts_over_and_removes_the_old_copy(tmp_path):
    part = make(tmp_path)
    part.open(part.resume_offset())
    write(part, 0, 2 * MiB)
    part.close()
    other = make(tmp_path, dict(SOURCE, size=11))
    assert other.resume_offset() == 0
    assert not os.path.exists(tmp_path / "part")


def test_discard_removes_file_and_record(tmp_path):
    part = make(tmp_path)
    part.open(part.resume_offset())
    write(part, 0, 10)
    part.discard()
    assert os.listdir(tmp_path) == []


def test_write_behind_starts_writeback_of_contiguous_ranges():
    calls = []

    def record(fd, offset, nbytes, flags):
        calls.append((fd, offset, nbytes, flags))
        return 0

    wb = partial.WriteBehind(7, 4096, step=MiB, sync=record)
    wb.written(4096 + MiB - 1)  # not a step yet
    assert calls == []
    wb.written(4096 + MiB)
    wb.written(4096 + 3 * MiB)
    assert calls == [(7, 4096, MiB, 2), (7, 4096 + MiB, 2 * MiB, 2)]


def test_write_behind_failure_only_turns_it_off():
    calls = []

    def fail(*args):
        calls.append(args)
        return -1

    wb = partial.WriteBehind(7, 0, step=1, sync=fail)
    wb.written(10)
    wb.written(20)
    assert len(calls) == 1
    assert partial.WriteBehind(7, 0, enabled=False)._enabled is False


def test_write_behind_on_a_real_file(tmp_path):
    # The real sync_file_range accepts what the copies pass it.
    assert partial.sync_file_range is not None
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"x" * (2 * MiB), 0)
        wb = partial.WriteBehind(fd, 0, step=MiB)
        wb.written(2 * MiB)
        assert wb._enabled and wb._start == 2 * MiB
    finally:
        os.close(fd)
