"""Run an RPC server until SIGTERM/SIGINT, with plain threads (no eventlet).

SIGHUP re-reads the configuration files and applies the options marked
mutable (oslo.log's ``debug`` and ``log_config_append`` among them)
without a restart: :func:`reload_on_sighup`, which every cs2os service
installs.  oslo.service's launchers are not used for this: the threading
backend's ServiceLauncher forks a worker process under a cotyledon
master (another PID, its own signal handling, the RPC connection made
across the fork), and with no_fork its SIGHUP ends the process.
"""

import queue
import signal
import threading

import oslo_messaging as messaging
from oslo_log import log as logging

from cs2os_agent.common import rpc

LOG = logging.getLogger(__name__)


class RPCService:
    def __init__(self, topic, host, endpoints):
        self.topic = topic
        self.host = host
        self.endpoints = endpoints
        self._server = None
        self._stop = threading.Event()
        # Hooks for work that lives as long as the server (conductor engine).
        self.on_start = None
        self.on_stop = None

    def start(self):
        target = messaging.Target(topic=self.topic, server=self.host)
        self._server = rpc.get_server(target, self.endpoints)
        self._server.start()
        LOG.info("Serving topic %s as server %s", self.topic, self.host)
        if self.on_start is not None:
            self.on_start()

    def stop(self):
        self._stop.set()

    def wait(self):
        self._stop.wait()
        LOG.info("Stopping %s", self.topic)
        if self.on_stop is not None:
            self.on_stop()
        self._server.stop()
        # Let calls in flight finish their reply before the transport goes.
        self._server.wait()


def run(service):
    """Start ``service`` and block until a termination signal."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.stop())
    service.start()
    try:
        service.wait()
    finally:
        rpc.cleanup()


class ConfigReloader:
    """Applies the mutable options of ``conf`` again when asked.

    The signal handler only puts a request on a queue
    (``SimpleQueue.put`` is safe in a signal handler); a thread of its
    own re-reads the files, so the main thread, which may hold a lock the
    reload also needs (a logging handler's), is never made to wait.
    """

    def __init__(self, conf):
        self.conf = conf
        self._requests = queue.SimpleQueue()
        self.reloads = 0  # completed, for tests and the log
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="config-reloader")
        self._thread.start()

    def handle(self, signum, _frame):
        self._requests.put(signum)

    def _run(self):
        while True:
            signum = self._requests.get()
            while not self._requests.empty():
                self._requests.get()  # several signals: one reload
            self.reload(signum)

    def reload(self, signum=signal.SIGHUP):
        LOG.info("Signal %d: reloading the configuration files %s",
                 signum, ", ".join(self.conf.config_file or []) or "(none)")
        try:
            changed = self.conf.mutate_config_files()
        except Exception as exc:  # noqa: BLE001 - keep the running config
            LOG.error("Reloading the configuration failed, the running "
                      "one stays: %s", exc)
            return None
        self.reloads += 1
        # oslo.config names each mutable option that changed; oslo.log's
        # hook has set the log levels from the new debug already.
        LOG.info("Configuration reloaded: %d mutable option(s) changed",
                 len(changed))
        LOG.debug("Debug logging is on")
        return changed


def log_options(conf):
    """Every option and where it came from, at DEBUG, secrets as ``****``:
    the first thing asked for when a service misbehaves (oslo.service's
    launcher logs it too; cs2os runs its own loop, see above)."""
    conf.log_opt_values(LOG, logging.DEBUG)


def reload_on_sighup(conf):
    """Make SIGHUP reload ``conf``'s mutable options instead of ending the
    process; from the main thread, once ``conf`` is parsed."""
    reloader = ConfigReloader(conf)
    reloader.start()
    signal.signal(signal.SIGHUP, reloader.handle)
    return reloader
