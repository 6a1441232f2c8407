"""Unit tests for cs2os_agent.qemu_img: exact argv and error mapping.

``_run`` is patched in every test; no process is started.
"""

import json
from unittest import mock

import pytest
from oslo_concurrency import processutils

from cs2os_agent import qemu_img
from cs2os_agent.common import exception

LIMITS = qemu_img.QEMU_IMG_LIMITS
GiB = 1024**3
MiB = 1024**2


@pytest.fixture
def run():
    with mock.patch.object(qemu_img, "_run", autospec=True) as m:
        m.return_value = ""
        yield m


def fail(exit_code, stdout="", stderr=""):
    return processutils.ProcessExecutionError(
        exit_code=exit_code, stdout=stdout, stderr=stderr
    )


def test_limits_are_nova_like():
    assert LIMITS.address_space == 1024**3
    assert LIMITS.cpu_time == 30
    # A qemu-img crashing under its limit leaves no core file behind.
    assert LIMITS.core_file_size == 0


def test_data_limits_grow_with_what_is_read():
    small = qemu_img.data_limits(0)
    assert (small.address_space, small.cpu_time, small.core_file_size,
            small.file_size) == (2 * GiB, 30, 0, None)
    # 30 s plus a second per 16 MiB read: 1 GiB -> 94 s, 100 GiB -> 6430 s.
    assert qemu_img.data_limits(GiB).cpu_time == 30 + 64
    assert qemu_img.data_limits(100 * GiB).cpu_time == 30 + 6400
    assert qemu_img.data_limits(GiB + 1).cpu_time == 30 + 65
    assert qemu_img.data_limits(GiB, max_output=5).file_size == 5


def test_every_command_runs_limited(run):
    # No command, whatever the image, reaches qemu-img without limits.
    info = '{"virtual-size": %d}' % GiB
    run.side_effect = lambda args, prlimit: (
        info if args[1] in ("info", "map", "check") else "")
    qemu_img.create("/i", "qcow2", size=1)
    qemu_img.rebase("/i", "qcow2", "/b", "raw")
    qemu_img.resize("/i", "qcow2", 2)
    qemu_img.info("/i", "qcow2")
    qemu_img.check("/i", "qcow2")
    qemu_img.map("/i", "qcow2")
    qemu_img.compare("/i", "/b", "qcow2", "raw")
    qemu_img.convert("/i", "qcow2", "/o", "raw")
    limits = {c.args[0][1]: c.kwargs["prlimit"] for c in run.call_args_list}
    assert set(limits) == {"create", "rebase", "resize", "info", "check",
                           "map", "compare", "convert"}
    assert all(lim is not None and lim.address_space and lim.cpu_time
               and lim.core_file_size == 0 for lim in limits.values())


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


def test_info_error_maps_to_qemu_img_error(run):
    run.side_effect = fail(
        1, stderr="qemu-img: Could not open '/img': Image is not in qcow2"
    )
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.info("/img", "qcow2")
    assert type(ei.value) is exception.QemuImgError
    assert ei.value.kwargs == {
        "command": "info",
        "exit_code": 1,
        "stderr": "qemu-img: Could not open '/img': Image is not in qcow2",
    }


def test_stderr_is_trimmed_to_its_tail(run):
    run.side_effect = fail(1, stderr="x" * 5000 + "END\n")
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.resize("/img", "qcow2", 1)
    stderr = ei.value.kwargs["stderr"]
    assert len(stderr) == 2000
    assert stderr.endswith("xEND")


@pytest.mark.parametrize("exit_code,name", [(-24, "SIGXCPU"),
                                            (-9, "SIGKILL")])
def test_killed_by_limit_maps_to_timeout(run, exit_code, name):
    run.side_effect = fail(exit_code)
    with pytest.raises(exception.QemuImgTimeout) as ei:
        qemu_img.map("/img", "qcow2")
    assert ei.value.kwargs == {"command": "map", "reason": "killed by " + name}


def test_crash_is_qemu_img_error(run):
    run.side_effect = fail(-6, stderr="qemu_thread_create: Resource ...")
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.info("/img", "qcow2")
    assert type(ei.value) is exception.QemuImgError
    assert ei.value.kwargs["exit_code"] == -6


def test_missing_binary_maps_to_qemu_img_error(run):
    run.side_effect = FileNotFoundError(2, "No such file", "qemu-img")
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.create("/img", "qcow2", size=1)
    assert ei.value.kwargs["command"] == "create"
    assert ei.value.kwargs["exit_code"] is None


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


def sized(*sizes_then_result):
    """``_run`` answers: qemu-img info of each image, then the command."""
    *sizes, result = sizes_then_result
    return [json.dumps({"virtual-size": n}) for n in sizes] + [result]


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


def test_convert_runs_under_data_limits_sized_by_info(run):
    run.side_effect = sized(GiB, "")
    qemu_img.convert("/t.qcow2", "qcow2", "/o.raw", "raw")
    assert run.call_args.args[0] == [
        "qemu-img", "convert", "-f", "qcow2", "-O", "raw", "/t.qcow2",
        "/o.raw"]
    limits = run.call_args.kwargs["prlimit"]
    assert (limits.address_space, limits.cpu_time, limits.file_size) == (
        2 * GiB, 94, None)


def test_convert_with_known_size_and_output_bound(run):
    qemu_img.convert("/t.qcow2", "qcow2", "/o.raw", "raw",
                     virtual_size=32 * MiB, max_output=32 * MiB)
    run.assert_called_once()  # no qemu-img info: the caller knew the size
    limits = run.call_args.kwargs["prlimit"]
    assert (limits.cpu_time, limits.file_size) == (32, 32 * MiB)


@pytest.mark.parametrize("error", [
    fail(-25),  # SIGXFSZ
    fail(1, stderr="qemu-img: error while converting raw: Could not resize "
         "file: File too large"),  # the signal ignored: EFBIG
])
def test_output_past_its_limit_is_named(run, error):
    run.side_effect = error
    with pytest.raises(exception.QemuImgOutputTooLarge) as ei:
        qemu_img.convert("/t", "qcow2", "/o", "raw", virtual_size=MiB,
                         max_output=4096)
    assert ei.value.kwargs["limit"] == 4096
    assert "4096 bytes" in str(ei.value)


def test_too_large_without_an_output_limit_is_plain_error(run):
    run.side_effect = fail(1, stderr="File too large")
    with pytest.raises(exception.QemuImgError) as ei:
        qemu_img.resize("/img", "qcow2", 1)
    assert type(ei.value) is exception.QemuImgError


def test_resize(run):
    qemu_img.resize("/img", "qcow2", 8 * 1024**2)
    run.assert_called_once_with(
        ["qemu-img", "resize", "-f", "qcow2", "/img", "8388608"],
        prlimit=LIMITS,
    )


# -- _run: how the limits reach the process ---------------------------------


@pytest.fixture
def execute():
    with mock.patch.object(processutils, "execute", autospec=True) as m:
        m.return_value = ("out", "")
        yield m


def test_limits_go_through_the_prlimit_program(execute, monkeypatch):
    # util-linux's prlimit execs qemu-img itself: no Python interpreter
    # is started per call, as processutils' own prlimit wrapper does.
    monkeypatch.setattr(qemu_img, "_prlimit_binary",
                        lambda: "/usr/bin/prlimit")
    assert qemu_img._run(["qemu-img", "info", "/img"],
                         prlimit=LIMITS) == "out"
    execute.assert_called_once_with(
        "/usr/bin/prlimit", "--as=1073741824", "--core=0", "--cpu=30", "--",
        "qemu-img", "info", "/img", prlimit=None)


def test_without_the_prlimit_program_oslo_sets_the_limits(execute,
                                                          monkeypatch):
    monkeypatch.setattr(qemu_img, "_prlimit_binary", lambda: None)
    qemu_img._run(["qemu-img", "info", "/img"], prlimit=LIMITS)
    execute.assert_called_once_with("qemu-img", "info", "/img",
                                    prlimit=LIMITS)


def test_unlimited_calls_run_as_they_are(execute, monkeypatch):
    monkeypatch.setattr(qemu_img, "_prlimit_binary",
                        lambda: "/usr/bin/prlimit")
    qemu_img._run(["qemu-img", "resize", "/img", "1"])
    execute.assert_called_once_with("qemu-img", "resize", "/img", "1",
                                    prlimit=None)


def test_every_limit_has_a_prlimit_program_option(monkeypatch):
    monkeypatch.setattr(qemu_img, "_prlimit_binary", lambda: "prlimit")
    every = processutils.ProcessLimits(**{
        name: 1 for name in processutils.ProcessLimits._LIMITS})
    argv = qemu_img.limited_argv(["qemu-img"], every)
    # Option names util-linux prlimit(1) accepts.
    accepted = {"--as", "--core", "--cpu", "--data", "--fsize", "--memlock",
                "--nofile", "--nproc", "--rss", "--stack"}
    assert argv[0] == "prlimit" and argv[-2:] == ["--", "qemu-img"]
    assert {a.split("=")[0] for a in argv[1:-2]} == accepted
