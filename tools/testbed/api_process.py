"""cs2os-api as a real process on a free 127.0.0.1 port."""

import requests

from tools.testbed import process
from tools.testbed import service

CONF_TEMPLATE = service.DEFAULT_SECTION + """
[api]
bind_host = 127.0.0.1
bind_port = %(port)d
auth_strategy = %(auth_strategy)s
conductor_timeout = %(conductor_timeout)d
"""


class ApiProcess(service.ServiceProcess):
    module = "cs2os_agent.cmd.api"

    def __init__(self, workdir, name, transport_url, exchange,
                 auth_strategy="noauth", conductor_timeout=10,
                 sections=None):
        """``sections``: e.g. {"keystone_authtoken": {...}}."""
        super().__init__(workdir, name)
        self.port = process.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        with open(self.conf_file, "w") as f:
            f.write(CONF_TEMPLATE % {
                "host": name, "transport_url": transport_url,
                "exchange": exchange, "log_file": self.log_file,
                "port": self.port, "auth_strategy": auth_strategy,
                "conductor_timeout": conductor_timeout,
            })
            service.write_sections(f, sections)

    def start(self, timeout=60):
        self.launch()
        return self.wait_ready(
            lambda: requests.get(self.url + "/", timeout=2)
            .raise_for_status(), timeout)
