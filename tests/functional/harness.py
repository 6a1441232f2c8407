"""What the functional and end-to-end tests share: names, checks, helpers.

Nothing here is assumed: each component is checked and a missing one
fails the run with a message saying how to provide it (start the services
with ``tools/test-services.sh start``).  Every name a run creates (libvirt
domains, the RabbitMQ vhost, agent host names, directories) carries RUN_ID,
and only those are removed afterwards.  The fixtures are in tests/conftest.py.
"""

import os
import shutil
import subprocess
import threading
import uuid

import libvirt
import oslo_messaging as messaging
import pytest

from cs2os_agent.common import context as cs2os_context
from tests.functional import agent_process

RUN_ID = uuid.uuid4().hex[:8]
# The broker the test services run; each test run gets a vhost of its own.
# Exchanges alone do not isolate runs: RabbitMQ queue names are global in a
# vhost, so two runs' servers on one topic would share a queue and take
# each other's messages.
BROKER_URL = os.environ.get(
    "CS2OS_TEST_BROKER_URL", "rabbit://guest:guest@127.0.0.1:5672/")
VHOST = "cs2os-test-%s" % RUN_ID
TRANSPORT_URL = BROKER_URL.rstrip("/") + "/" + VHOST
LIBVIRT_URI = os.environ.get("CS2OS_TEST_LIBVIRT_URI", "qemu:///system")
HINT = "start the test services with: tools/test-services.sh start"
# Short on purpose: throttled copies outlast it, so they pass only because
# the call monitor keeps long calls alive, and a killed agent is noticed
# within seconds.
RPC_RESPONSE_TIMEOUT = 3


def require_binaries():
    missing = [
        b for b in ("qemu-img", "qemu-io", "qemu-system-x86_64")
        if shutil.which(b) is None
    ]
    if missing:
        pytest.fail("missing %s (tools/install-deps.sh installs them)"
                    % ", ".join(missing), pytrace=False)


def require_broker():
    import kombu

    # kombu names oslo.messaging's rabbit:// scheme amqp://.
    url = BROKER_URL.replace("rabbit://", "amqp://", 1)
    try:
        with kombu.Connection(url, connect_timeout=5) as c:
            c.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        pytest.fail("RabbitMQ at %s is not reachable (%s); %s"
                    % (BROKER_URL, exc, HINT), pytrace=False)


def rabbitmqctl(*args):
    try:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail("rabbitmqctl %s failed (%s); the tests need the "
                    "broker's rabbitmqctl to make a vhost per run"
                    % (" ".join(args), exc), pytrace=False)


def require_libvirt():
    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        pytest.fail("libvirtd at %s is not reachable (%s); %s"
                    % (LIBVIRT_URI, exc, HINT), pytrace=False)
    conn.close()
    if not os.path.exists("/dev/kvm"):
        pytest.fail("/dev/kvm is missing: KVM guests cannot run",
                    pytrace=False)


class AgentFactory:
    def __init__(self, workdir, services, agent_api, instances_path,
                 cloudstack_root):
        self._args = (workdir, services, agent_api, instances_path,
                      cloudstack_root)
        self.started = []

    def start(self, name="agent", **kwargs):
        workdir, services, agent_api, instances_path, root = self._args
        kwargs.setdefault("allowed_source_roots", [os.path.join(root, "mnt")])
        agent = agent_process.AgentProcess(
            workdir,
            host="cs2os-test-%s-%s" % (RUN_ID, name),
            transport_url=TRANSPORT_URL,
            exchange=services["exchange"],
            instances_path=instances_path,
            **kwargs,
        )
        self.started.append(agent)
        agent.info = agent.start(
            agent_api, cs2os_context.get_admin_context()
        )
        return agent

    def stop_all(self):
        for agent in self.started:
            agent.stop()


class RecordingConductor:
    """Receives the agent's progress casts like the conductor will."""

    target = messaging.Target(version="1.0")

    def __init__(self):
        self.reports = []
        self._cond = threading.Condition()

    def report_progress(self, context, migration_id, progress):
        with self._cond:
            self.reports.append((migration_id, progress))
            self._cond.notify_all()

    def final_reports(self, migration_id, timeout=30):
        """Every report of ``migration_id`` once its last (100%) arrived.

        Casts travel apart from the RPC reply, so the final report may
        land a moment after sync_overlay returned.
        """
        def mine():
            return [p for m, p in self.reports if m == migration_id]

        def complete():
            got = mine()
            return got and got[-1]["bytes_done"] == got[-1]["bytes_total"]

        with self._cond:
            if not self._cond.wait_for(complete, timeout):
                raise AssertionError("no final progress report for %s: %r"
                                     % (migration_id, mine()))
            return mine()
