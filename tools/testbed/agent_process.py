"""cs2os services as real processes, started and stopped by the test."""

import os
import signal
import subprocess
import sys
import time

from cs2os_agent.common import exception

# What every cs2os service started by a test shares.
DEFAULT_SECTION = """[DEFAULT]
host = %(host)s
transport_url = %(transport_url)s
control_exchange = %(exchange)s
rpc_response_timeout = 10
debug = True
log_file = %(log_file)s
"""

CONF_TEMPLATE = DEFAULT_SECTION + """
[agent]
instances_path = %(instances_path)s
allowed_source_roots = %(allowed_source_roots)s
progress_interval = 1

[transfer]
max_bandwidth_mbps = %(max_bandwidth_mbps)d
# Small, so that an interrupted copy in a test has checkpoints to resume at.
checkpoint_mib = 4
"""


class ServiceProcess:
    """One cs2os console script with its own config and log file (by PID)."""

    module = None  # e.g. "cs2os_agent.cmd.agent"

    def __init__(self, workdir, name):
        self.name = name
        self.conf_file = os.path.join(workdir, "%s.conf" % name)
        self.log_file = os.path.join(workdir, "%s.log" % name)
        self.proc = None
        # E.g. CS2OS_CRASH_AT for the fault suite (common/faultpoints.py).
        self.env = {}

    def launch(self, env=None):
        """Start it; ``env``: more environment for this start only."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module,
             "--config-file", self.conf_file],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_file + ".stderr", "a"),
            env=dict(os.environ, **self.env, **(env or {})),
        )

    def wait_ready(self, probe, timeout=60):
        """Call ``probe()`` until it answers; fail if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "%s exited with %s; see %s"
                    % (self.module, self.proc.returncode, self.log_file))
            try:
                return probe()
            except Exception as exc:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise AssertionError(
                        "%s did not answer in %ds: %s"
                        % (self.module, timeout, exc)) from exc
                time.sleep(0.2)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def log(self):
        with open(self.log_file, errors="replace") as f:
            return f.read()


class AgentProcess(ServiceProcess):
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


__all__ = ["AgentProcess", "ServiceProcess", "exception"]


def init_rpc_client(workdir, transport_url, exchange,
                    rpc_response_timeout=60):
    """Make this process an RPC client of the services started here.

    It reads a config file like the services' own, so client and servers
    meet on the same broker, vhost and exchange.
    """
    from cs2os_agent import conf
    from cs2os_agent.common import config
    from cs2os_agent.common import rpc

    client_conf = os.path.join(workdir, "client.conf")
    with open(client_conf, "w") as f:
        f.write("[DEFAULT]\ntransport_url = %s\ncontrol_exchange = %s\n"
                "rpc_response_timeout = %d\n"
                % (transport_url, exchange, rpc_response_timeout))
    config.parse_args(["--config-file", client_conf],
                      default_config_files=[])
    rpc.init(conf.CONF)
