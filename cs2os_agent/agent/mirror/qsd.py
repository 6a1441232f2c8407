"""A qemu-storage-daemon that exports the mirror target T over NBD.

The graph is the one measured in recipes/live-mirror: file D (read-only)
-> raw; file T -> qcow2 whose backing is D's node; an NBD server on a unix
socket; a writable NBD export of T's *qcow2* node, so that the source QEMU
writes guest data and QSD keeps T's qcow2 metadata.

The daemon is a child process of the agent (no ``--daemonize``): its exit
status and stderr are ours to report, and its death is seen at once.  It is
driven over QMP with ``qemu.qmp`` (asyncio) on a loop thread of its own, so
callers (plain agent threads) get a synchronous API.  Its sockets live in
a private directory (mode 0700, made by the caller) whose path ends up in
argv: nothing else on the node can connect to the export or the monitor.

T's file node ignores flushes (``cache.no-flush``): a mirror target is
scratch until ``finish``, and a crash or a restart anywhere before that
discards it (a mirror always starts on a fresh T). QEMU's flushes cost the
copy dearly: qcow2 fdatasyncs T whenever its metadata caches depend on
each other, and the mirror flushes the target before it reports READY,
each time waiting until the disk has every byte so far. Measured here, a 1
GiB mirror to READY: 294-314 MB/s through the tunnel with flushes, 444-506
MB/s without (ssh cat 478-622 in the same runs). T is durable only after
the clean shutdown (``stop``: ``blockdev-del`` writes qcow2's metadata)
and the fsync the caller makes then (``MirrorTarget.finish``). The
source's guest flushes are not forwarded to the target by a QEMU 7.2
mirror either, so a daemon that died mid-mirror leaves a T nobody may
trust.

T is written with O_DIRECT (``cache.direct``, ``aio=native``, as Nova
opens instance disks with ``cache=none``) where its file system allows,
and the daemon's allocator keeps the buffers it frees
(:data:`MALLOC_TUNABLES`). Each NBD write arrives in a fresh buffer of up
to 1 MiB; by default glibc gives memory that size back to the kernel when
it is freed (mmap threshold, heap trim), so every request faulted in fresh
pages, and on a virtual compute node each fault may also be the
hypervisor's. A buffered T then copies every byte into fresh page-cache
pages as well. Measured here, 1 GiB to
READY, medians of 3, MB/s and the daemon's CPU-seconds per GiB:

    T buffered (write-behind), glibc defaults  tunnel 388  qsd 1.1-1.9  cat 582
    T O_DIRECT, glibc defaults                 tunnel 375  qsd 1.0-1.1  cat 649
    T O_DIRECT, buffers kept                   tunnel 532  qsd 0.4-0.5  cat 578

Only both together pay. On a file system without O_DIRECT, T stays
buffered and the agent writes it behind
(:mod:`cs2os_agent.agent.mirror.writebehind`) so that ``finish``'s fsync stays
short.
"""

import asyncio
import os
import signal
import subprocess
import threading
import time

from oslo_log import log as logging
from qemu.qmp import QMPClient
from qemu.qmp import QMPError
from qemu.qmp.qmp_client import ExecuteError

from cs2os_agent.common import fileutils
from cs2os_agent.common import mirror_errors

LOG = logging.getLogger(__name__)

BINARY = "qemu-storage-daemon"
QMP_SOCKET = "qmp.sock"
NBD_SOCKET = "nbd.sock"
PID_FILE = "qsd.pid"
LOG_FILE = "qsd.log"
EXPORT_ID = "exp-t"
# Node names; the export serves T_FMT.
D_FILE, D_FMT, T_FILE, T_FMT = "d-file", "d-fmt", "t-file", "t-fmt"
# glibc keeps freed blocks up to 32 MiB (an NBD request's maximum, and
# glibc's ceiling for this knob) in the heap instead of unmapping them,
# and trims the heap only above 128 MiB free; see the module docstring.
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:"
                   "glibc.malloc.trim_threshold=134217728")
# Unix socket paths are limited to 107 bytes (sun_path).
SUN_PATH_MAX = 107
_STDERR_SHOWN = 600


def _option_value(text):
    """A value inside a QEMU ``key=value,...`` option: ',' is doubled."""
    return text.replace(",", ",,")


def build_argv(run_dir, binary=BINARY):
    """The daemon's command line: a QMP monitor and a pid file, nothing else.

    The block graph is built over QMP afterwards, where file names travel
    as JSON strings and need no escaping.
    """
    qmp = os.path.join(run_dir, QMP_SOCKET)
    return [
        binary,
        "--chardev",
        "socket,id=qmp0,path=%s,server=on,wait=off" % _option_value(qmp),
        "--monitor", "chardev=qmp0",
        "--pidfile", os.path.join(run_dir, PID_FILE),
    ]


def daemon_environment(environ=None):
    """The daemon's environment: ours plus :data:`MALLOC_TUNABLES`."""
    env = dict(os.environ if environ is None else environ)
    tunables = env.get("GLIBC_TUNABLES")
    env["GLIBC_TUNABLES"] = (MALLOC_TUNABLES if not tunables
                             else tunables + ":" + MALLOC_TUNABLES)
    return env


def t_file_options(direct_io):
    """T's file node: O_DIRECT with native AIO where the file system
    allows it, buffered otherwise; flushes ignored either way."""
    if direct_io:
        return {"cache": {"direct": True, "no-flush": True}, "aio": "native"}
    return {"cache": {"direct": False, "no-flush": True}}


def graph_commands(target, base, base_format, nbd_socket, export_name,
                   direct_io=True):
    """The QMP commands (name, arguments) that build and export the graph."""
    return [
        ("blockdev-add", {"driver": "file", "node-name": D_FILE,
                          "filename": base, "read-only": True}),
        ("blockdev-add", {"driver": base_format, "node-name": D_FMT,
                          "file": D_FILE, "read-only": True}),
        # Scratch until finish() fsyncs it (see above).
        ("blockdev-add", dict({"driver": "file", "node-name": T_FILE,
                               "filename": target},
                              **t_file_options(direct_io))),
        # The format layer lives in QSD: exporting this node makes NBD
        # clients see guest data, not qcow2 bytes.
        ("blockdev-add", {"driver": "qcow2", "node-name": T_FMT,
                          "file": T_FILE, "backing": D_FMT}),
        ("nbd-server-start", {"addr": {"type": "unix",
                                       "data": {"path": nbd_socket}}}),
        ("block-export-add", {"type": "nbd", "id": EXPORT_ID,
                              "node-name": T_FMT, "name": export_name,
                              "writable": True}),
    ]


# blockdev-del in this order: T's qcow2 node first (its close writes the
# metadata; the fsync is the caller's), D last (T's node holds a reference).
CLOSE_ORDER = (T_FMT, T_FILE, D_FMT, D_FILE)


def _tail(text, limit=_STDERR_SHOWN):
    text = " ".join(x.strip() for x in text.splitlines() if x.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


def exit_status(returncode):
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "exit code %d" % returncode


class StorageDaemon:
    """One qemu-storage-daemon exporting ``target`` (qcow2 on ``base``).

    ``run_dir`` must exist, be private to the agent's user and hold
    nothing else of value: the daemon's sockets, pid file and log go there.
    """

    def __init__(self, run_dir, target, base, export_name,
                 base_format="raw", binary=BINARY, start_timeout=15,
                 command_timeout=30):
        self.run_dir = run_dir
        self.target = target
        self.base = base
        self.base_format = base_format
        self.export_name = export_name
        self.binary = binary
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.qmp_socket = os.path.join(run_dir, QMP_SOCKET)
        self.nbd_socket = os.path.join(run_dir, NBD_SOCKET)
        self.log_file = os.path.join(run_dir, LOG_FILE)
        self.pid_file = os.path.join(run_dir, PID_FILE)
        self.proc = None
        self.closed = False  # True once T was closed cleanly: durable
        self.direct_io = None  # known once started: T opened with O_DIRECT
        self._qmp = None
        self._loop = None
        self._thread = None
        for path in (self.qmp_socket, self.nbd_socket):
            if len(path.encode()) > SUN_PATH_MAX:
                raise mirror_errors.StorageDaemonError(
                    command="start", reason="socket path %s is longer than "
                    "%d bytes, the limit of a unix socket; use a shorter "
                    "[mirror] run_dir" % (path, SUN_PATH_MAX))

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    # -- the QMP loop thread ------------------------------------------------

    def _start_loop(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True,
            name="qsd-qmp-%s" % self.export_name)
        self._thread.start()

    def _stop_loop(self):
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
        self._loop = self._thread = None

    def _run(self, coro, timeout):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    # -- life cycle ---------------------------------------------------------

    def start(self):
        """Start the daemon and export T; return the NBD socket path.

        On any failure the daemon is stopped again and the error raised.
        """
        for path in (self.qmp_socket, self.nbd_socket, self.pid_file):
            # Leftovers of an earlier attempt in this private directory.
            if os.path.lexists(path):
                os.unlink(path)
        argv = build_argv(self.run_dir, self.binary)
        try:
            self.direct_io = fileutils.supports_direct_io(self.target)
        except OSError as exc:
            raise mirror_errors.StorageDaemonError(
                command="start", reason="cannot open %s: %s"
                % (self.target, exc.strerror)) from None
        LOG.debug("Starting %s (T %s)", " ".join(argv),
                  "O_DIRECT" if self.direct_io else "buffered")
        with open(self.log_file, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env=daemon_environment(),
                    # Its own session: a signal meant for the agent's
                    # terminal must not kill it before T is closed cleanly.
                    start_new_session=True)
            except OSError as exc:
                raise mirror_errors.StorageDaemonError(
                    command="start", reason="%s (Debian: apt-get install "
                    "qemu-system-common)" % exc) from None
        self._start_loop()
        try:
            self._connect()
            for command, arguments in graph_commands(
                    self.target, self.base, self.base_format,
                    self.nbd_socket, self.export_name, self.direct_io):
                self.execute(command, arguments)
        except BaseException:
            self.kill()
            raise
        LOG.info("qemu-storage-daemon pid %d exports %s as %s on %s",
                 self.pid, self.target, self.export_name, self.nbd_socket)
        return self.nbd_socket

    def _connect(self):
        """Connect to the monitor once the daemon listens on it."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._raise_if_dead("starting")
            if os.path.exists(self.qmp_socket):
                client = QMPClient("qsd-%s" % self.export_name)
                try:
                    self._run(client.connect(self.qmp_socket), 5)
                except (QMPError, OSError):
                    pass  # bound but not listening yet
                else:
                    self._qmp = client
                    return
            if time.monotonic() > deadline:
                raise mirror_errors.StorageDaemonError(
                    command="start", reason="no QMP monitor on %s after "
                    "%d s; see %s" % (self.qmp_socket, self.start_timeout,
                                      self.log_file))
            time.sleep(0.02)

    def stderr(self):
        try:
            with open(self.log_file, errors="replace") as f:
                return _tail(f.read())
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _raise_if_dead(self, during):
        if self.proc is None:
            raise mirror_errors.StorageDaemonError(command=during,
                                               reason="not started")
        if self.proc.poll() is not None:
            raise mirror_errors.StorageDaemonDied(
                pid=self.proc.pid, status=exit_status(self.proc.returncode),
                during=during, stderr=self.stderr() or "(no message)")

    def check(self):
        """Raise StorageDaemonDied if the daemon is gone."""
        self._raise_if_dead("exporting the mirror target")

    def execute(self, command, arguments=None, timeout=None):
        """One QMP command; its return value."""
        self._raise_if_dead(command)
        try:
            return self._run(self._qmp.execute(command, arguments),
                             timeout or self.command_timeout)
        except ExecuteError as exc:
            raise mirror_errors.StorageDaemonError(
                command=command, reason=str(exc)) from None
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            # The monitor went away: most likely the daemon did.
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            self._raise_if_dead(command)
            raise mirror_errors.StorageDaemonError(
                command=command,
                reason="%s: %s" % (type(exc).__name__, exc)) from None

    def written_bytes(self):
        """Bytes the daemon wrote to files so far (its write() counter).

        Node-level blockstats stay 0 in a storage daemon (accounting lives
        in BlockBackends, recipe finding); /proc/<pid>/io counts every
        pwrite into T, and the NBD socket's sendmsg is not counted.
        """
        try:
            with open("/proc/%d/io" % self.pid) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key == "wchar":
                        return int(value)
        except (OSError, TypeError, ValueError):
            return None
        return None

    def stop(self, mode="safe", grace=5.0):
        """Close the export and T cleanly, then end the daemon.

        The recipe's order: block-export-del (and wait for
        BLOCK_EXPORT_DELETED), nbd-server-stop, blockdev-del of every node,
        quit.  A ``safe`` export deletion is refused while an NBD client is
        still connected (the tunnel may take a moment to pass the source's
        close on); after ``grace`` seconds the connections are dropped
        (``hard``), which loses nothing once the source's job has ended.
        Returns the seconds from the call until T was closed.
        """
        started = time.monotonic()
        self._delete_export(mode, grace)
        self.execute("nbd-server-stop")
        for node in CLOSE_ORDER:
            self.execute("blockdev-del", {"node-name": node})
        self.closed = True
        closed_after = time.monotonic() - started
        self._quit()
        return closed_after

    def _delete_export(self, mode, grace):
        deadline = time.monotonic() + grace
        while True:
            try:
                self._run(self._export_del(mode), self.command_timeout)
                return
            except ExecuteError as exc:
                # 'safe': "export ... has clients" (QEMU words it
                # differently across versions): wait, then drop them.
                if mode == "hard" or time.monotonic() > deadline:
                    if mode == "hard":
                        raise mirror_errors.StorageDaemonError(
                            command="block-export-del",
                            reason=str(exc)) from None
                    LOG.warning("NBD export %s still has a client after "
                                "%.1f s (%s); dropping it",
                                self.export_name, grace, exc)
                    mode = "hard"
                    continue
                time.sleep(0.02)
            except (QMPError, OSError, EOFError, TimeoutError):
                self._raise_if_dead("block-export-del")
                raise

    async def _export_del(self, mode):
        with self._qmp.listener("BLOCK_EXPORT_DELETED") as listener:
            await self._qmp.execute("block-export-del",
                                    {"id": EXPORT_ID, "mode": mode})
            await asyncio.wait_for(listener.get(), 10)

    def _quit(self):
        try:
            self._run(self._qmp.execute("quit"), 5)
        except (QMPError, OSError, EOFError, TimeoutError):
            pass  # it may close the monitor before the answer arrives
        self._disconnect()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._stop_loop()
        self._remove_files()

    def _disconnect(self):
        if self._qmp is None or self._loop is None:
            return
        try:
            self._run(self._qmp.disconnect(), 5)
        except (QMPError, OSError, EOFError, TimeoutError):
            # qemu.qmp: disconnect() after 'quit' raises EOFError when the
            # daemon closed the socket first (recipe finding): harmless.
            pass
        self._qmp = None

    def kill(self):
        """End the daemon at once (SIGKILL, by its PID); T is not durable."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._disconnect()
        self._stop_loop()
        self._remove_files()

    def _remove_files(self):
        for path in (self.qmp_socket, self.nbd_socket, self.pid_file):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
