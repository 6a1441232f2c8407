"""Unit tests for cs2os_agent.qemu_img: the limits every command runs
under, and the failures common to every command (a non-zero exit, a
signal, a crash, no binary, too much output).

No process is started: ``_run`` is patched, or processutils.execute
where ``_run`` itself is tested.
"""

from unittest import mock

import pytest
from oslo_concurrency import processutils

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from tests.unit.qemu_img_helpers import LIMITS
from tests.unit.qemu_img_helpers import GiB
from tests.unit.qemu_img_helpers import MiB
from tests.unit.qemu_img_helpers import fail
from tests.unit.qemu_img_helpers import run_fixture  # noqa: F401 - fixture
from tests.unit.qemu_img_helpers import sized


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
