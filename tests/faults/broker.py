"""A private RabbitMQ for the one test that restarts the broker.

The shared broker (tools/test-services.sh, 127.0.0.1:5672) serves every
other test running on this machine, other engineers' runs and the
minicloud's Nova included: restarting it would fail them.  This one is a
separate node (its own RABBITMQ_NODENAME, port, distribution port, mnesia
and log dirs, Erlang cookie via HOME, env file) on 127.0.0.1, started and
stopped by PID.
"""

import os
import subprocess
import time

import pytest

from tools.testbed import harness as ft
from tools.testbed import process

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class PrivateBroker(process.Child):
    # rabbitmq-server is a script that runs the Erlang VM, which runs
    # helpers (erl_child_setup, inet_gethost): all of them go, by group.
    stop_group = True
    stop_timeout = 60

    def __init__(self, base):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.port = process.free_port()
        self.dist_port = process.free_port()
        self.node = "cs2os-faults-%s@localhost" % ft.RUN_ID
        env_file = os.path.join(base, "rabbitmq-env.conf")
        with open(env_file, "w") as f:
            f.write("# private to the fault suite\n")
        plugins = os.path.join(base, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].\n")
        self.env = dict(
            os.environ, HOME=base, LC_ALL="C.UTF-8",
            RABBITMQ_CONF_ENV_FILE=env_file,
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(base, "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
            RABBITMQ_CONFIG_FILE=os.path.join(base, "rabbitmq"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-kernel inet_dist_use_interface {127,0,0,1}"))
        self.proc = None
        self.url = "rabbit://guest:guest@127.0.0.1:%d/" % self.port

    def start(self, timeout=90):
        if not os.path.exists(SERVER):
            pytest.fail("%s is missing (tools/install-deps.sh installs "
                        "rabbitmq-server)" % SERVER, pytrace=False)
        out = open(os.path.join(self.base, "server.out"), "a")
        self.spawn([SERVER], env=self.env, stdout=out,
                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.usable():
            if self.proc.poll() is not None:
                pytest.fail("the private rabbitmq-server exited %s; see %s"
                            % (self.proc.returncode, self.base),
                            pytrace=False)
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail("the private rabbitmq-server did not answer "
                            "on 127.0.0.1:%d in %d s; see %s"
                            % (self.port, timeout, self.base),
                            pytrace=False)
            time.sleep(0.5)

    def usable(self):
        import kombu

        try:
            with kombu.Connection("amqp://guest:guest@127.0.0.1:%d//"
                                  % self.port, connect_timeout=2) as c:
                c.ensure_connection(max_retries=1)
            return True
        except Exception:  # noqa: BLE001 - not yet
            return False
