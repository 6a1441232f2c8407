"""Run an RPC server until SIGTERM/SIGINT, with plain threads (no eventlet)."""

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
