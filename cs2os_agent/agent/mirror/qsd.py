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

What it is started with and the graph it is told to build, with the
measurements behind each option, are in :mod:`.qsdgraph`.
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

from cs2os_agent.agent.mirror import qsdgraph
from cs2os_agent.common import fileutils
from cs2os_agent.common import mirror_errors

LOG = logging.getLogger(__name__)

BINARY = "qemu-storage-daemon"
NBD_SOCKET = "nbd.sock"
LOG_FILE = "qsd.log"
# Unix socket paths are limited to 107 bytes (sun_path).
SUN_PATH_MAX = 107
_STDERR_SHOWN = 600


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
                 command_timeout=30, graph=None, close_order=None):
        self.run_dir = run_dir
        self.target = target
        self.base = base
        self.base_format = base_format
        self.export_name = export_name
        self.binary = binary
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.qmp_socket = os.path.join(run_dir, qsdgraph.QMP_SOCKET)
        self.nbd_socket = os.path.join(run_dir, NBD_SOCKET)
        self.log_file = os.path.join(run_dir, LOG_FILE)
        self.pid_file = os.path.join(run_dir, qsdgraph.PID_FILE)
        # Another graph than T on D (a data disk's volume, volumemirror.py):
        # its QMP commands and the nodes to close, in order.
        self.graph = graph
        self.close_order = close_order or qsdgraph.CLOSE_ORDER
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
        argv = qsdgraph.build_argv(self.run_dir, self.binary)
        try:
            self.direct_io = (self.graph is None
                              and fileutils.supports_direct_io(self.target))
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
                    env=qsdgraph.daemon_environment(),
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
            commands = self.graph or qsdgraph.graph_commands(
                self.target, self.base, self.base_format,
                self.nbd_socket, self.export_name, self.direct_io)
            for command, arguments in commands:
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
        for node in self.close_order:
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
                                    {"id": qsdgraph.EXPORT_ID, "mode": mode})
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
