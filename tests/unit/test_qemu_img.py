"""Unit tests for cs2os_agent.qemu_img: each command's exact argv and
what its output and exit status mean.

``_run`` is patched in every test; no process is started.  The limits
every command runs under and the failures common to all of them:
tests/unit/test_qemu_img_limits.py.
"""

import json
from unittest import mock

import pytest

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from tests.unit.qemu_img_helpers import LIMITS
from tests.unit.qemu_img_helpers import GiB
from tests.unit.qemu_img_helpers import MiB
from tests.unit.qemu_img_helpers import fail
from tests.unit.qemu_img_helpers import run_fixture  # noqa: F401 - fixture
from tests.unit.qemu_img_helpers import sized


def test_info(run):
    run.return_value = '{"virtual-size": 1048576, "format": "qcow2"}'
    result = qemu_img.info("/img", "qcow2")
    assert result == {"virtual-size": 1048576, "format": "qcow2"}
    run.assert_called_once_with(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", "/img"],
        prlimit=LIMITS,
    )


def test_info_backing_chain_force_share(run):
    run.return_value = '[{"filename": "/top"}, {"filename": "/base"}]'
    result = qemu_img.info(
        "/top", "qcow2", backing_chain=True, force_share=True
    )
    assert [layer["filename"] for layer in result] == ["/top", "/base"]
    run.assert_called_once_with(
        ["qemu-img", "info", "--output=json", "-f", "qcow2",
         "--backing-chain", "-U", "/top"],
        prlimit=LIMITS,
    )


def test_create_with_size(run):
    qemu_img.create("/img", "qcow2", size=10 * 1024**3)
    run.assert_called_once_with(
        ["qemu-img", "create", "-f", "qcow2", "/img", "10737418240"],
        prlimit=LIMITS,
    )


def test_create_with_backing_file(run):
    qemu_img.create("/top", "qcow2", backing_file="/base", backing_fmt="raw")
    run.assert_called_once_with(
        ["qemu-img", "create", "-f", "qcow2", "-b", "/base", "-F", "raw",
         "/top"],
        prlimit=LIMITS,
    )


def test_create_with_backing_file_and_size(run):
    qemu_img.create(
        "/top", "qcow2", size=4096, backing_file="/base", backing_fmt="qcow2"
    )
    run.assert_called_once_with(
        ["qemu-img", "create", "-f", "qcow2", "-b", "/base", "-F", "qcow2",
         "/top", "4096"],
        prlimit=LIMITS,
    )


def test_create_backing_file_needs_format(run):
    with pytest.raises(ValueError):
        qemu_img.create("/top", "qcow2", backing_file="/base")
    run.assert_not_called()


def test_rebase_unsafe(run):
    qemu_img.rebase("/top", "qcow2", "/_base/abc", "raw")
    run.assert_called_once_with(
        ["qemu-img", "rebase", "-f", "qcow2", "-u", "-b", "/_base/abc",
         "-F", "raw", "/top"],
        prlimit=LIMITS,
    )


def test_rebase_safe(run):
    qemu_img.rebase("/top", "qcow2", "/base", "qcow2", unsafe=False)
    run.assert_called_once_with(
        ["qemu-img", "rebase", "-f", "qcow2", "-b", "/base", "-F", "qcow2",
         "/top"],
        prlimit=LIMITS,
    )


def test_rebase_remove_backing_file(run):
    qemu_img.rebase("/top", "qcow2", None, None)
    run.assert_called_once_with(
        ["qemu-img", "rebase", "-f", "qcow2", "-u", "-b", "", "/top"],
        prlimit=LIMITS,
    )


CHECK_OK = {"check-errors": 0, "filename": "/img", "format": "qcow2"}


def test_check_ok(run):
    run.return_value = json.dumps(CHECK_OK)
    assert qemu_img.check("/img", "qcow2") == CHECK_OK
    run.assert_called_once_with(
        ["qemu-img", "check", "--output=json", "-f", "qcow2", "/img"],
        prlimit=LIMITS,
    )


def test_check_corrupt(run):
    report = dict(CHECK_OK, corruptions=12, leaks=1)
    run.side_effect = fail(2, stdout=json.dumps(report), stderr="ERROR ...")
    with pytest.raises(exception.ImageCorrupt) as ei:
        qemu_img.check("/img", "qcow2")
    assert ei.value.kwargs == {
        "path": "/img", "reason": "12 corruptions, 1 leaked clusters",
    }


def test_check_leaks_only_returns_report(run):
    report = dict(CHECK_OK, leaks=3)
    run.side_effect = fail(3, stdout=json.dumps(report))
    with mock.patch.object(qemu_img.LOG, "warning") as warning:
        assert qemu_img.check("/img", "qcow2") == report
    warning.assert_called_once()
    assert warning.call_args.args[1:] == ("/img", 3)


@pytest.mark.parametrize("exit_code", [1, 63])
def test_check_cannot_run(run, exit_code):
    run.side_effect = fail(exit_code, stderr="does not support checks")
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.check("/img", "raw")
    assert type(ei.value) is exception.QemuImgError
    assert ei.value.kwargs == {
        "command": "check",
        "exit_code": exit_code,
        "stderr": "does not support checks",
    }


def test_check_corrupt_without_json_is_qemu_img_error(run):
    run.side_effect = fail(2, stdout="", stderr="boom")
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.check("/img", "qcow2")
    assert ei.value.kwargs["exit_code"] == 2


def test_compare_identical(run):
    run.side_effect = sized(GiB, GiB, "Images are identical.\n")
    assert qemu_img.compare("/a", "/b", "qcow2", "raw") is None
    assert run.call_args_list == [
        mock.call(["qemu-img", "info", "--output=json", "-f", "qcow2",
                   "/a"], prlimit=LIMITS),
        mock.call(["qemu-img", "info", "--output=json", "-f", "raw", "/b"],
                  prlimit=LIMITS),
        mock.call(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", "/a",
                   "/b"], prlimit=mock.ANY),
    ]
    # Its CPU cap follows what it reads: both guest views whole.
    limits = run.call_args.kwargs["prlimit"]
    assert limits.cpu_time == 30 + 2 * 64
    assert limits.address_space == 2 * GiB


def test_compare_strict_force_share(run):
    run.side_effect = sized(MiB, 3 * MiB, "")
    qemu_img.compare(
        "/a", "/b", "qcow2", "qcow2", strict=True, force_share=True
    )
    assert [c.args[0][-2:] for c in run.call_args_list[:2]] == [
        ["-U", "/a"], ["-U", "/b"]]
    assert run.call_args.args[0] == [
        "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", "-s", "-U",
        "/a", "/b"]
    assert run.call_args.kwargs["prlimit"].cpu_time == 31


def test_compare_differ(run):
    run.side_effect = sized(MiB, MiB, fail(
        1, stdout="Content mismatch at offset 512!\n"))
    with pytest.raises(exception.ImagesDiffer) as ei:
        qemu_img.compare("/a", "/b", "qcow2", "raw")
    assert ei.value.kwargs == {
        "left": "/a", "right": "/b",
        "detail": "Content mismatch at offset 512!",
    }


def test_compare_differ_in_size_and_content(run):
    run.side_effect = sized(MiB, MiB, fail(
        1,
        stdout="Warning: Image size mismatch!\n"
        "Content mismatch at offset 512!\n",
    ))
    with pytest.raises(exception.ImagesDiffer) as ei:
        qemu_img.compare("/a", "/b", "raw", "raw")
    assert ei.value.kwargs["detail"] == (
        "Warning: Image size mismatch! Content mismatch at offset 512!"
    )


def test_compare_error(run):
    run.side_effect = sized(MiB, MiB, fail(2, stderr="Could not open '/b'"))
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.compare("/a", "/b", "qcow2", "raw")
    assert not isinstance(ei.value, exception.ImagesDiffer)
    assert ei.value.kwargs["exit_code"] == 2


def test_images_equal(run):
    run.side_effect = sized(MiB, MiB, "")
    assert qemu_img.images_equal("/a", "/b", "qcow2", "raw") is True
    run.side_effect = sized(MiB, MiB,
                            fail(1, stdout="Content mismatch at offset 0!"))
    assert qemu_img.images_equal("/a", "/b", "qcow2", "raw") is False
    run.side_effect = sized(MiB, MiB, fail(2))
    with pytest.raises(exception.QemuImgError):
        qemu_img.images_equal("/a", "/b", "qcow2", "raw")


EXTENTS = [
    {"start": 0, "length": 65536, "depth": 0, "present": True,
     "zero": False, "data": True, "offset": 327680},
    {"start": 65536, "length": 983040, "depth": 1, "present": False,
     "zero": True, "data": False},
    {"start": 1048576, "length": 65536, "depth": 1, "present": True,
     "zero": False, "data": True, "offset": 327680},
    {"start": 1114112, "length": 65536, "depth": 0, "present": True,
     "zero": True, "data": False},
    {"start": 1179648, "length": 131072, "depth": 0, "present": True,
     "zero": False, "data": True, "offset": 393216},
]


def test_map(run):
    run.return_value = json.dumps(EXTENTS)
    assert qemu_img.map("/img", "qcow2", force_share=True) == EXTENTS
    run.assert_called_once_with(
        ["qemu-img", "map", "--output=json", "-f", "qcow2", "-U", "/img"],
        prlimit=LIMITS,
    )


def test_allocated_bytes_counts_top_layer_data_only(run):
    run.return_value = json.dumps(EXTENTS)
    assert qemu_img.allocated_bytes("/img", "qcow2") == 65536 + 131072
    run.assert_called_once_with(
        ["qemu-img", "map", "--output=json", "-f", "qcow2", "/img"],
        prlimit=LIMITS,
    )


def test_resize(run):
    qemu_img.resize("/img", "qcow2", 8 * 1024**2)
    run.assert_called_once_with(
        ["qemu-img", "resize", "-f", "qcow2", "/img", "8388608"],
        prlimit=LIMITS,
    )
