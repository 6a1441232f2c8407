"""What every cs2os service the test bed launches shares.

Each service (agent_process, conductor_process, api_process) is a real
console-script process with its own config file and log, started and
stopped by its PID (process.Child); the test, the sandbox or the benchmark
that launched it is an RPC client of it (init_rpc_client).
"""

import os
import subprocess
import sys
import time

from tools.testbed import process

# The [DEFAULT] section of every cs2os service started by the test bed.
DEFAULT_SECTION = """[DEFAULT]
host = %(host)s
transport_url = %(transport_url)s
control_exchange = %(exchange)s
rpc_response_timeout = 10
debug = True
log_file = %(log_file)s
"""


class ServiceProcess(process.Child):
    """One cs2os console script with its own config and log file (by PID)."""

    module = None  # e.g. "cs2os_agent.cmd.agent"
    # Time for a graceful stop: an agent finishes its RPC calls first.
    stop_timeout = 20

    def __init__(self, workdir, name):
        self.name = name
        self.conf_file = os.path.join(workdir, "%s.conf" % name)
        self.log_file = os.path.join(workdir, "%s.log" % name)
        self.proc = None
        # E.g. CS2OS_CRASH_AT for the fault suite (common/faultpoints.py).
        self.env = {}

    def launch(self, env=None):
        """Start it; ``env``: more environment for this start only."""
        self.spawn(
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

    def log(self):
        with open(self.log_file, errors="replace") as f:
            return f.read()


def write_sections(f, sections):
    """More config sections: {"cloudstack": {"endpoint": ...}, ...}."""
    for section, options in (sections or {}).items():
        f.write("\n[%s]\n" % section)
        for name, value in options.items():
            f.write("%s = %s\n" % (name, value))


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
