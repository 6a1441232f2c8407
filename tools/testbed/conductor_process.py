"""cs2os-conductor as a real process with its own database."""

import os
import subprocess
import sys

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

    def start(self, conductor_api, context, timeout=60):
        self.launch()
        return self.wait_ready(
            lambda: conductor_api.list_migrations(context, limit=1),
            timeout)


def start_for_cloud(workdir, name, transport_url, exchange, cloud, rpc_api,
                    admin_context):
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
    proc.start(rpc_api, admin_context)
    return proc
