"""cs2os-agent as a real process, started and stopped by the caller."""

from tools.testbed import service

CONF_TEMPLATE = service.DEFAULT_SECTION + """
[agent]
instances_path = %(instances_path)s
allowed_source_roots = %(allowed_source_roots)s
progress_interval = 1

[transfer]
max_bandwidth_mbps = %(max_bandwidth_mbps)d
# Small, so that an interrupted copy in a test has checkpoints to resume at.
checkpoint_mib = 4
"""


class AgentProcess(service.ServiceProcess):
    module = "cs2os_agent.cmd.agent"

    def __init__(self, workdir, host, transport_url, exchange,
                 instances_path, allowed_source_roots,
                 max_bandwidth_mbps=0, transfer_options=None):
        super().__init__(workdir, host)
        self.host = host
        with open(self.conf_file, "w") as f:
            f.write(CONF_TEMPLATE % {
                "host": host,
                "transport_url": transport_url,
                "exchange": exchange,
                "log_file": self.log_file,
                "instances_path": instances_path,
                "allowed_source_roots": ",".join(allowed_source_roots),
                "max_bandwidth_mbps": max_bandwidth_mbps,
            })
            # More [transfer] options, e.g. the ssh key and known_hosts.
            for name, value in (transfer_options or {}).items():
                f.write("%s = %s\n" % (name, value))

    def start(self, agent_api, context, timeout=60):
        self.launch()
        return self.wait_ready(
            lambda: agent_api.get_agent_info(context, self.host, timeout=2),
            timeout)
