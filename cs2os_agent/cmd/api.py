"""cs2os-api: the REST API in a simple threaded HTTP server.

For production behind a web server use the WSGI module instead
(``cs2os_agent.wsgi.api``); this command is what DevStack and the sandbox
run, and what an operator can start by hand.
"""

import signal
import socketserver
import sys
import threading
from wsgiref import simple_server

from oslo_log import log as logging

from cs2os_agent import conf
from cs2os_agent.api import service
from cs2os_agent.common import config
from cs2os_agent.common import gmr
from cs2os_agent.common import rpc
from cs2os_agent.common import service as common_service

CONF = conf.CONF
LOG = logging.getLogger(__name__)


class _Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(simple_server.WSGIRequestHandler):
    def log_message(self, fmt, *args):
        # One access-log line through oslo.log instead of stderr.
        LOG.info("%s %s", self.address_string(), fmt % args)


def main():
    config.parse_args(sys.argv[1:])
    logging.setup(CONF, "cs2os-api")
    gmr.setup(CONF, "cs2os-api")
    common_service.reload_on_sighup(CONF)
    app = service.make_application(CONF)
    # Now that every library registered its options (oslo.messaging's
    # with the conductor's client).
    common_service.log_options(CONF)
    server = simple_server.make_server(
        CONF.api.bind_host, CONF.api.bind_port, app,
        server_class=_Server, handler_class=_Handler)
    LOG.info("cs2os-api listening on %s:%s", CONF.api.bind_host,
             server.server_port)

    def stop(signum, _frame):
        LOG.info("cs2os-api stopping (signal %d)", signum)
        # shutdown() waits for serve_forever, so not from its own thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        rpc.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
