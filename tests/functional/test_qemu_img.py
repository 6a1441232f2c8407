"""Functional tests for cs2os_agent.qemu_img against the real qemu-img.

Images are built in ``tmp_path`` and known bytes written with qemu-io, so
every assertion is about what really is on disk.  A missing qemu-img or
qemu-io fails these tests; it never skips them.
"""

import shutil
import struct
import subprocess

import pytest
from oslo_concurrency import processutils

from cs2os_agent import qemu_img
from cs2os_agent.common import exception

MiB = 1024**2
KiB = 1024
SIZE = 4 * MiB


@pytest.fixture(autouse=True)
def _require_tools():
    for tool in ("qemu-img", "qemu-io"):
        if shutil.which(tool) is None:
            pytest.fail("%s is not installed (package qemu-utils)" % tool)


def write(path, fmt, pattern, offset, length):
    subprocess.run(
        ["qemu-io", "-f", fmt, "-c",
         "write -P 0x%x %d %d" % (pattern, offset, length), str(path)],
        check=True, capture_output=True,
    )


def convert_to_raw(src, fmt, dst):
    subprocess.run(
        ["qemu-img", "convert", "-f", fmt, "-O", "raw", str(src), str(dst)],
        check=True, capture_output=True,
    )


@pytest.fixture
def chain(tmp_path):
    """base.qcow2 (0xab at 1M, 64k) <- top.qcow2 (0xcd at 0, 64k; 0xef at
    2M, 128k): what a CloudStack root volume on its template looks like."""
    base = tmp_path / "base.qcow2"
    top = tmp_path / "top.qcow2"
    qemu_img.create(str(base), "qcow2", size=SIZE)
    write(base, "qcow2", 0xAB, 1 * MiB, 64 * KiB)
    qemu_img.create(
        str(top), "qcow2", backing_file=str(base), backing_fmt="qcow2"
    )
    write(top, "qcow2", 0xCD, 0, 64 * KiB)
    write(top, "qcow2", 0xEF, 2 * MiB, 128 * KiB)
    return base, top


def test_info_backing_chain(chain):
    base, top = chain
    layers = qemu_img.info(str(top), "qcow2", backing_chain=True)
    assert [layer["filename"] for layer in layers] == [str(top), str(base)]
    assert layers[0]["format"] == "qcow2"
    assert layers[0]["backing-filename"] == str(base)
    assert layers[0]["full-backing-filename"] == str(base)
    assert layers[0]["backing-filename-format"] == "qcow2"
    assert layers[0]["virtual-size"] == SIZE
    assert "backing-filename" not in layers[1]
    assert layers[1]["format-specific"]["data"]["corrupt"] is False


def test_info_without_chain_does_not_open_backing(chain):
    base, top = chain
    base.unlink()
    top_info = qemu_img.info(str(top), "qcow2", force_share=True)
    assert top_info["backing-filename"] == str(base)
    with pytest.raises(exception.QemuImgError):
        qemu_img.info(str(top), "qcow2", backing_chain=True)


def test_create_with_backing_takes_its_size(tmp_path):
    base = tmp_path / "base.raw"
    top = tmp_path / "top.qcow2"
    qemu_img.create(str(base), "raw", size=3 * MiB)
    qemu_img.create(str(top), "qcow2", backing_file=str(base),
                    backing_fmt="raw")
    top_info = qemu_img.info(str(top), "qcow2")
    assert top_info["virtual-size"] == 3 * MiB
    assert top_info["backing-filename"] == str(base)
    assert top_info["backing-filename-format"] == "raw"
    assert base.stat().st_size == 3 * MiB


def test_unsafe_rebase_onto_identical_copy_keeps_content(chain, tmp_path):
    base, top = chain
    guest_view = tmp_path / "guest-view.raw"
    convert_to_raw(top, "qcow2", guest_view)
    base_raw = tmp_path / "base.raw"
    convert_to_raw(base, "qcow2", base_raw)

    qemu_img.rebase(str(top), "qcow2", str(base_raw), "raw")

    top_info = qemu_img.info(str(top), "qcow2")
    assert top_info["backing-filename"] == str(base_raw)
    assert top_info["backing-filename-format"] == "raw"
    assert qemu_img.compare(str(top), str(guest_view), "qcow2", "raw") is None
    assert qemu_img.images_equal(str(top), str(guest_view), "qcow2", "raw")


def test_unsafe_rebase_onto_other_base_changes_content(chain, tmp_path):
    _base, top = chain
    guest_view = tmp_path / "guest-view.raw"
    convert_to_raw(top, "qcow2", guest_view)
    other = tmp_path / "other.raw"
    qemu_img.create(str(other), "raw", size=SIZE)
    write(other, "raw", 0x11, 1 * MiB, 64 * KiB)

    qemu_img.rebase(str(top), "qcow2", str(other), "raw")

    with pytest.raises(exception.ImagesDiffer) as ei:
        qemu_img.compare(str(top), str(guest_view), "qcow2", "raw")
    assert ei.value.kwargs["detail"] == "Content mismatch at offset 1048576!"
    assert not qemu_img.images_equal(
        str(top), str(guest_view), "qcow2", "raw"
    )


def test_rebase_removes_backing_file(chain, tmp_path):
    _base, top = chain
    qemu_img.rebase(str(top), "qcow2", None, None)
    assert "backing-filename" not in qemu_img.info(str(top), "qcow2")
    # Only the top layer's writes remain; 1M now reads as zeros.
    expected = tmp_path / "expected.raw"
    qemu_img.create(str(expected), "raw", size=SIZE)
    write(expected, "raw", 0xCD, 0, 64 * KiB)
    write(expected, "raw", 0xEF, 2 * MiB, 128 * KiB)
    assert qemu_img.compare(str(top), str(expected), "qcow2", "raw") is None


def test_compare_size_mismatch(tmp_path):
    small = tmp_path / "small.raw"
    large = tmp_path / "large.raw"
    qemu_img.create(str(small), "raw", size=SIZE)
    qemu_img.create(str(large), "raw", size=2 * SIZE)
    # Not strict: a tail of zeros is the same guest-visible content.
    assert qemu_img.images_equal(str(small), str(large), "raw", "raw")
    assert not qemu_img.images_equal(
        str(small), str(large), "raw", "raw", strict=True
    )
    write(large, "raw", 0x1, SIZE + MiB, 4 * KiB)
    with pytest.raises(exception.ImagesDiffer) as ei:
        qemu_img.compare(str(small), str(large), "raw", "raw")
    assert ei.value.kwargs["detail"] == (
        "Warning: Image size mismatch! Content mismatch at offset 5242880!"
    )


def test_compare_missing_image_is_error(chain, tmp_path):
    _base, top = chain
    missing = str(tmp_path / "nope")
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.compare(str(top), missing, "qcow2", "raw")
    assert not isinstance(ei.value, exception.ImagesDiffer)
    # Found by the qemu-img info that sizes compare's CPU cap, first.
    assert ei.value.kwargs["command"] == "info"
    assert ei.value.kwargs["exit_code"] == 1
    assert missing in ei.value.kwargs["stderr"]


def test_check_good_image(chain):
    _base, top = chain
    report = qemu_img.check(str(top), "qcow2")
    assert report["check-errors"] == 0
    assert "corruptions" not in report
    assert report["allocated-clusters"] == 3


def _refcount_block(f):
    """Return the file offset of a qcow2 image's first refcount block."""
    f.seek(48)  # header: refcount_table_offset
    (table,) = struct.unpack(">Q", f.read(8))
    f.seek(table)
    (block,) = struct.unpack(">Q", f.read(8))
    return block


def test_check_corrupt_image(chain):
    _base, top = chain
    # Zeroed refcounts: every cluster in use now "has refcount 0", which
    # qemu-img check counts as corruptions (exit 2).
    with open(top, "r+b") as f:
        f.seek(_refcount_block(f))
        f.write(b"\0" * 64 * KiB)
    with pytest.raises(exception.ImageCorrupt) as ei:
        qemu_img.check(str(top), "qcow2")
    assert ei.value.kwargs["path"] == str(top)
    assert "corruptions" in ei.value.kwargs["reason"]


def test_check_leaked_cluster_is_not_an_error(chain):
    _base, top = chain
    # Claim one more cluster past the end of the image in the refcounts:
    # a leak (exit 3), which costs space but no data.
    with open(top, "r+b") as f:
        end = f.seek(0, 2)
        block = _refcount_block(f)
        f.seek(block + 2 * (end // (64 * KiB)))
        f.write(struct.pack(">H", 1))
        f.seek(end)
        f.write(b"\0" * 64 * KiB)
    report = qemu_img.check(str(top), "qcow2")
    assert report["leaks"] == 1
    assert "corruptions" not in report


def test_map_and_allocated_bytes(chain):
    _base, top = chain
    extents = qemu_img.map(str(top), "qcow2")
    assert extents[0]["start"] == 0
    assert sum(e["length"] for e in extents) == SIZE
    top_data = [(e["start"], e["length"]) for e in extents
                if e["data"] and e["depth"] == 0]
    assert top_data == [(0, 64 * KiB), (2 * MiB, 128 * KiB)]
    base_data = [(e["start"], e["length"]) for e in extents
                 if e["data"] and e["depth"] == 1]
    assert base_data == [(1 * MiB, 64 * KiB)]
    assert qemu_img.allocated_bytes(str(top), "qcow2") == 192 * KiB


def test_resize_grows(chain):
    _base, top = chain
    qemu_img.resize(str(top), "qcow2", 2 * SIZE)
    assert qemu_img.info(str(top), "qcow2")["virtual-size"] == 2 * SIZE
    with pytest.raises(exception.QemuImgError):
        qemu_img.resize(str(top), "qcow2", SIZE)


def test_raw_file_opened_as_qcow2_is_error(tmp_path):
    raw = tmp_path / "disk.raw"
    qemu_img.create(str(raw), "raw", size=SIZE)
    for call in (qemu_img.info, qemu_img.check, qemu_img.map):
        with pytest.raises(exception.QemuImgError) as ei:
            call(str(raw), "qcow2")
        assert ei.value.kwargs["exit_code"] == 1
        assert "not in qcow2 format" in ei.value.kwargs["stderr"]


def test_check_raw_is_unsupported(tmp_path):
    raw = tmp_path / "disk.raw"
    qemu_img.create(str(raw), "raw", size=SIZE)
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.check(str(raw), "raw")
    assert ei.value.kwargs["exit_code"] == 63


def test_untrusted_calls_run_under_prlimit(chain, monkeypatch):
    _base, top = chain
    # 16 MiB of address space is too little for qemu-img to even start;
    # failing proves the limits really reach the process.
    monkeypatch.setattr(
        qemu_img, "QEMU_IMG_LIMITS",
        processutils.ProcessLimits(address_space=16 * MiB),
    )
    for call in (qemu_img.info, qemu_img.check, qemu_img.map):
        with pytest.raises(exception.QemuImgError):
            call(str(top), "qcow2")
    # Nor is any other command unlimited: every image may be hostile.
    with pytest.raises(exception.QemuImgError):
        qemu_img.resize(str(top), "qcow2", 2 * SIZE)
    with pytest.raises(exception.QemuImgError):
        qemu_img.rebase(str(top), "qcow2", None, None)
    monkeypatch.undo()
    assert qemu_img.info(str(top), "qcow2")["virtual-size"] == SIZE


def test_limits_without_the_prlimit_program(chain, monkeypatch):
    # Without util-linux's prlimit, oslo's Python wrapper sets them.
    _base, top = chain
    monkeypatch.setattr(qemu_img, "_prlimit_binary", lambda: None)
    assert qemu_img.info(str(top), "qcow2")["format"] == "qcow2"
    monkeypatch.setattr(
        qemu_img, "QEMU_IMG_LIMITS",
        processutils.ProcessLimits(address_space=16 * MiB),
    )
    with pytest.raises(exception.QemuImgError):
        qemu_img.check(str(top), "qcow2")


def test_cpu_limit_kills_through_the_prlimit_program(tmp_path, monkeypatch):
    # The limit lands on qemu-img itself (prlimit execs it), so running out
    # of CPU time is reported as a timeout, not as a mystery exit code.
    assert qemu_img._prlimit_binary() is not None
    argv = qemu_img.limited_argv(
        ["sh", "-c", "while :; do :; done"],
        processutils.ProcessLimits(cpu_time=1))
    with pytest.raises(processutils.ProcessExecutionError) as ei:
        processutils.execute(*argv)
    assert qemu_img._error("check", ei.value).__class__ is (
        exception.QemuImgTimeout)
