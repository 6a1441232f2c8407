import os

import pytest

from cs2os_agent.common import exception
from cs2os_agent.transfer import monitor
from cs2os_agent.transfer import partial as partial_file
from cs2os_agent.transfer import path
from tests.unit.transfer.helpers import MiB
from tests.unit.transfer.helpers import copy


def sparse_file(p, extents, size):
    with open(p, "wb") as f:
        f.truncate(size)
        for offset, data in extents:
            f.seek(offset)
            f.write(data)
    return p


def source(p, roots, chunk=MiB):
    return path.PathSource(str(p), allowed_roots=[str(r) for r in roots],
                           chunk_size=chunk)


def test_copies_content_and_keeps_holes(tmp_path):
    data = [(0, b"a" * MiB), (8 * MiB, os.urandom(3 * MiB + 17))]
    src = sparse_file(tmp_path / "src", data, 32 * MiB)
    dst = tmp_path / "dst"
    with source(src, [tmp_path], chunk=MiB) as s:
        total = s.bytes_to_copy()
        mon = monitor.TransferMonitor("m", "s", total)
        copied = copy(s, dst, mon)
    assert open(src, "rb").read() == open(dst, "rb").read()
    assert copied == mon.done == total
    # Only data moved (tmpfs/ext4 report holes at 4 KiB granularity).
    assert copied < 5 * MiB
    assert os.stat(dst).st_blocks * 512 < 6 * MiB


def test_data_extents_of_a_file_that_is_all_hole(tmp_path):
    p = sparse_file(tmp_path / "hole", [], 4 * MiB)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert list(path.data_extents(fd, 4 * MiB)) == []
    finally:
        os.close(fd)


def test_outside_roots_refused(tmp_path):
    (tmp_path / "root").mkdir()
    src = sparse_file(tmp_path / "elsewhere", [(0, b"x")], 10)
    with pytest.raises(exception.SourceNotAllowed, match="elsewhere"):
        source(src, [tmp_path / "root"])


def test_symlink_out_of_root_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    target = sparse_file(tmp_path / "secret", [(0, b"x")], 10)
    (root / "link").symlink_to(target)
    with pytest.raises(exception.SourceNotAllowed):
        source(root / "link", [root])


def test_symlink_inside_root_refused(tmp_path):
    # Never followed, even to a file the roots allow: a symlink's target
    # can change between any check and the read (O_NOFOLLOW).
    root = tmp_path / "root"
    root.mkdir()
    target = sparse_file(root / "real", [(0, b"x")], 10)
    (root / "link").symlink_to(target)
    with pytest.raises(exception.SourceNotRegularFile) as err:
        source(root / "link", [root])
    assert err.value.kwargs == {"path": str(root / "link"),
                                "kind": "symbolic link"}


def test_directory_inside_the_roots_is_allowed_on_the_way(tmp_path):
    # Only the last component must not be a symlink: a pool directory
    # that is one (a mount point moved elsewhere) still works.
    real_pool = tmp_path / "real-pool"
    real_pool.mkdir()
    sparse_file(real_pool / "vol", [(0, b"x")], 10)
    (tmp_path / "pool").symlink_to(real_pool)
    with source(tmp_path / "pool" / "vol", [tmp_path]) as s:
        assert s.fingerprint()["path"] == str(real_pool / "vol")


def test_root_prefix_is_not_a_parent(tmp_path):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt2").mkdir()
    src = sparse_file(tmp_path / "mnt2" / "f", [(0, b"x")], 10)
    with pytest.raises(exception.SourceNotAllowed):
        source(src, [tmp_path / "mnt"])


def test_no_roots_configured_refuses_everything(tmp_path):
    src = sparse_file(tmp_path / "f", [(0, b"x")], 10)
    with pytest.raises(exception.SourceNotAllowed, match="none configured"):
        source(src, [])


def test_missing_and_directory(tmp_path):
    with pytest.raises(exception.SourceNotFound):
        source(tmp_path / "nope", [tmp_path])
    (tmp_path / "d").mkdir()
    with pytest.raises(exception.InvalidSource, match="regular file"):
        source(tmp_path / "d", [tmp_path])
    sparse_file(tmp_path / "f", [(0, b"x")], 10)
    with pytest.raises(exception.SourceNotFound):  # ENOTDIR
        source(tmp_path / "f" / "below-a-file", [tmp_path])


def test_fingerprint_changes_when_the_file_does(tmp_path):
    p = sparse_file(tmp_path / "f", [(0, b"x")], 10)
    with source(p, [tmp_path]) as s:
        first = s.fingerprint()
    with open(p, "ab") as f:
        f.write(b"more")
    with source(p, [tmp_path]) as s:
        assert s.fingerprint() != first


def test_cancel_mid_copy(tmp_path):
    src = sparse_file(tmp_path / "src", [(0, os.urandom(4 * MiB))], 4 * MiB)
    mon = monitor.TransferMonitor("m9", "sync_overlay", 4 * MiB)
    real_advance = mon.advance

    def advance_then_cancel(n):
        real_advance(n)
        mon.cancel()

    mon.advance = advance_then_cancel
    with source(src, [tmp_path]) as s:
        with pytest.raises(exception.MigrationCancelled):
            copy(s, tmp_path / "dst", mon)
    assert mon.done == MiB


def test_copy_from_an_offset_moves_only_the_rest(tmp_path):
    data = os.urandom(6 * MiB)
    src = sparse_file(tmp_path / "src", [(0, data)], 6 * MiB)
    dst = tmp_path / "dst"
    with open(dst, "wb") as f:
        f.write(data[:2 * MiB])  # what an interrupted copy left
    with source(src, [tmp_path]) as s:
        assert s.bytes_to_copy(2 * MiB) == 4 * MiB
        copied = copy(s, dst, monitor.TransferMonitor("m", "s", 4 * MiB),
                      offset=2 * MiB)
    assert copied == 4 * MiB
    assert open(dst, "rb").read() == data


def test_copy_writes_behind_as_it_goes(tmp_path, monkeypatch):
    # The disk starts writing each range while the copy goes on, so the
    # checkpoint and final fsyncs do not find the whole copy dirty.
    calls = []

    def record(fd, offset, nbytes, flags):
        calls.append((offset, nbytes, flags))
        return 0

    monkeypatch.setattr(partial_file, "sync_file_range", record)
    monkeypatch.setattr(partial_file, "WRITE_BEHIND_BYTES", 2 * MiB)
    data = os.urandom(9 * MiB)
    src = sparse_file(tmp_path / "src", [(MiB, data)], 16 * MiB)
    dst = tmp_path / "dst"
    with source(src, [tmp_path], chunk=MiB) as s:
        copy(s, dst, monitor.TransferMonitor("m", "s", 9 * MiB))
    assert open(dst, "rb").read() == open(src, "rb").read()
    assert calls and {flags for *_, flags in calls} == {2}
    assert calls[0][0] == 0
    for (o1, n1, _), (o2, _, _) in zip(calls, calls[1:], strict=False):
        assert o1 + n1 == o2
    assert calls[-1][0] + calls[-1][1] >= 9 * MiB
