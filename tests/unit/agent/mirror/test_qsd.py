"""The storage daemon's command line and QMP graph, without the daemon."""

import pytest

from cs2os_agent.agent.mirror import qsd
from cs2os_agent.agent.mirror import qsdgraph
from cs2os_agent.agent.mirror import target as mirror_target
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd


def test_argv_has_only_a_private_monitor_and_a_pid_file():
    argv = qsdgraph.build_argv("/run/cs2os/m/ab", qsd.BINARY)
    assert argv[0] == "qemu-storage-daemon"
    assert argv[1:3] == ["--chardev", "socket,id=qmp0,path=/run/cs2os/m/ab/"
                         "qmp.sock,server=on,wait=off"]
    assert "--monitor" in argv and "--pidfile" in argv
    # No shell, no daemonize: the agent keeps it as a child it can watch.
    assert "--daemonize" not in argv
    assert all(isinstance(a, str) for a in argv)


def test_commas_in_the_run_dir_cannot_add_options():
    argv = qsdgraph.build_argv("/run/a,server=off,x", qsd.BINARY)
    assert "path=/run/a,,server=off,,x/qmp.sock,server=on" in argv[2]


def test_graph_exports_the_qcow2_node_writable_with_read_only_base():
    cmds = qsdgraph.graph_commands("/i/u/disk.cs2os-mirror", "/i/_base/d",
                                   "raw", "/r/nbd.sock", "cs2os-x")
    names = [c for c, _ in cmds]
    assert names == ["blockdev-add"] * 4 + ["nbd-server-start",
                                            "block-export-add"]
    d_file, d_fmt, t_file, t_fmt = (a for _, a in cmds[:4])
    assert d_file["read-only"] and d_fmt["read-only"]
    assert d_fmt["driver"] == "raw" and d_fmt["file"] == d_file["node-name"]
    assert t_fmt["driver"] == "qcow2"
    assert t_fmt["backing"] == d_fmt["node-name"]
    assert "read-only" not in t_file
    # T is scratch until finish() fsyncs it: QEMU's flushes are not wanted;
    # by default it bypasses the page cache.
    assert t_file["cache"] == {"direct": True, "no-flush": True}
    assert t_file["aio"] == "native"
    assert "cache" not in d_file
    export = cmds[-1][1]
    # The format node: NBD clients read and write guest data.
    assert export["node-name"] == t_fmt["node-name"]
    assert export["writable"] is True and export["name"] == "cs2os-x"
    assert cmds[4][1]["addr"] == {"type": "unix",
                                  "data": {"path": "/r/nbd.sock"}}


def test_a_t_without_o_direct_is_buffered_and_still_ignores_flushes():
    cmds = qsdgraph.graph_commands("/t", "/d", "raw", "/r/nbd.sock", "x",
                              direct_io=False)
    t_file = cmds[2][1]
    assert t_file["node-name"] == qsdgraph.T_FILE
    assert t_file["cache"] == {"direct": False, "no-flush": True}
    assert "aio" not in t_file  # native AIO needs O_DIRECT


def test_the_daemon_gets_the_malloc_tunables_and_keeps_others():
    env = qsdgraph.daemon_environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": qsdgraph.MALLOC_TUNABLES}
    env = qsdgraph.daemon_environment({"GLIBC_TUNABLES": "glibc.pthread.x=1"})
    assert env["GLIBC_TUNABLES"] == (
        "glibc.pthread.x=1:" + qsdgraph.MALLOC_TUNABLES)
    # Buffers up to an NBD request's 32 MiB stay in the heap.
    assert "glibc.malloc.mmap_threshold=33554432" in qsdgraph.MALLOC_TUNABLES


def test_close_order_puts_t_first_and_d_last():
    assert qsdgraph.CLOSE_ORDER[0] == qsdgraph.T_FMT
    assert qsdgraph.CLOSE_ORDER[-1] == qsdgraph.D_FILE


def test_too_long_socket_paths_are_refused_up_front(tmp_path):
    with pytest.raises(mirror_errors.StorageDaemonError) as err:
        qsd.StorageDaemon("/" + "r" * 100, "/t", "/d", "e")
    assert "run_dir" in str(err.value)


def test_a_target_that_cannot_be_opened_fails_the_start_by_name(tmp_path):
    d = qsd.StorageDaemon(str(tmp_path), str(tmp_path / "absent"), "/d", "e")
    with pytest.raises(mirror_errors.StorageDaemonError) as err:
        d.start()
    assert str(tmp_path / "absent") in str(err.value)
    assert d.proc is None  # nothing was started


def test_status_words():
    assert qsd.exit_status(None) == "running"
    assert qsd.exit_status(-9) == "killed by SIGKILL"
    assert qsd.exit_status(1) == "exit code 1"


def test_not_started():
    d = qsd.StorageDaemon("/run/x", "/t", "/d", "e")
    assert not d.alive()
    with pytest.raises(mirror_errors.StorageDaemonError):
        d.check()


def test_run_dirs_are_short_and_per_migration():
    a = mirror_target.run_dir_for("/run/cs2os/mirror", "m-1")
    b = mirror_target.run_dir_for("/run/cs2os/mirror", "m-2")
    assert a != b and len(a) == len("/run/cs2os/mirror/") + 16
    # Stays under the unix socket limit with a long migration id too.
    long_id = mirror_target.run_dir_for("/run/cs2os/mirror", "x" * 500)
    assert len(long_id + "/nbd.sock") < qsd.SUN_PATH_MAX
    assert nbd.export_name("m-1").startswith("cs2os-")


def test_start_time_names_this_process():
    import os

    assert mirror_target._start_time(os.getpid()) > 0
    assert mirror_target._start_time(2 ** 22 + 12345) is None
