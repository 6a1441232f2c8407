"""cs2os-conductor as a real process with its own database."""

import copy
import os
import subprocess
import sys

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tools.testbed import service

CONF_TEMPLATE = service.DEFAULT_SECTION + """
[oslo_messaging_notifications]
driver = messagingv2
topics = %(notification_topic)s

[database]
connection = %(db_url)s

[conductor]
lease_seconds = %(lease_seconds)d
wait_timeout = 300
"""


class ConductorProcess(service.ServiceProcess):
    module = "cs2os_agent.cmd.conductor"

    def __init__(self, workdir, host, transport_url, exchange, db_url,
                 notification_topic, lease_seconds=30, sections=None):
        """``sections``: {"cloudstack": {...}, "openstack": {...}, ...}"""
        super().__init__(workdir, host)
        self.host = host
        with open(self.conf_file, "w") as f:
            f.write(CONF_TEMPLATE % {
                "host": host, "transport_url": transport_url,
                "exchange": exchange, "log_file": self.log_file,
                "notification_topic": notification_topic,
                "db_url": db_url, "lease_seconds": lease_seconds,
            })
            service.write_sections(f, sections)

    def manage(self, *args):
        """Run cs2os-manage with this conductor's config; its output."""
        return subprocess.run(
            [sys.executable, "-m", "cs2os_agent.cmd.manage",
             "--config-file", self.conf_file, *args],
            check=True, capture_output=True, text=True).stdout

    # How long one readiness probe waits for its answer.  A call made
    # before the conductor consumes its queue is lost and waits out its
    # whole timeout: probing with the tests' own clients (30 s and more in
    # the end-to-end tests) made every start about 30 s longer than needed.
    probe_timeout = 2

    def probe(self, conductor_api=None):
        """One RPC call, answered once a conductor on the topic is up;
        ``conductor_api``: a client on the broker this conductor uses
        (default: the process's own), called with the short timeout."""
        api = copy.copy(conductor_api or conductor_rpcapi.ConductorAPI())
        api.timeout = self.probe_timeout
        return api.list_migrations(cs2os_context.get_admin_context(),
                                   limit=1)

    def start(self, conductor_api=None, timeout=60):
        self.launch()
        return self.wait_ready(lambda: self.probe(conductor_api), timeout)


def start_for_cloud(workdir, name, transport_url, exchange, cloud):
    """A conductor on its own SQLite database (``<name>.sqlite``) in front
    of the CloudStack stand-in ``cloud``, synced and started; the caller
    stops it."""
    proc = ConductorProcess(
        workdir, "%s-conductor" % name, transport_url, exchange,
        "sqlite:///%s" % os.path.join(workdir, "%s.sqlite" % name),
        "notifications-%s" % name,
        sections={"cloudstack": {"endpoint": cloud.endpoint,
                                 "api_key": cloud.admin.apikey,
                                 "secret_key": cloud.admin.secretkey}})
    proc.manage("db", "sync")
    proc.start()
    return proc
