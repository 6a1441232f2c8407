"""Functional test harness: real qemu-img, libvirtd/KVM, RabbitMQ.

Nothing here is assumed: each component is checked at the start and a
missing one fails the run with a message saying how to provide it (start
the services with ``tools/test-services.sh start``).  Every name this
harness creates (libvirt domains, exchange, agent host names, directories)
carries a per-run random part, and only those are removed afterwards.
"""

import os
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
import uuid

import libvirt
import oslo_messaging as messaging
import pytest

from cs2os_agent import conf
from cs2os_agent.agent import rpcapi
from cs2os_agent.common import config
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import rpc
from tests.functional import agent_process
from tests.functional import images

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


def _require_binaries():
    missing = [
        b for b in ("qemu-img", "qemu-io", "qemu-system-x86_64")
        if shutil.which(b) is None
    ]
    if missing:
        pytest.fail("missing %s (tools/install-deps.sh installs them)"
                    % ", ".join(missing), pytrace=False)


def _require_broker():
    import kombu

    # kombu names oslo.messaging's rabbit:// scheme amqp://.
    url = BROKER_URL.replace("rabbit://", "amqp://", 1)
    try:
        with kombu.Connection(url, connect_timeout=5) as c:
            c.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        pytest.fail("RabbitMQ at %s is not reachable (%s); %s"
                    % (BROKER_URL, exc, HINT), pytrace=False)


def _rabbitmqctl(*args):
    try:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail("rabbitmqctl %s failed (%s); the tests need the "
                    "broker's rabbitmqctl to make a vhost per run"
                    % (" ".join(args), exc), pytrace=False)


def _require_libvirt():
    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        pytest.fail("libvirtd at %s is not reachable (%s); %s"
                    % (LIBVIRT_URI, exc, HINT), pytrace=False)
    conn.close()
    if not os.path.exists("/dev/kvm"):
        pytest.fail("/dev/kvm is missing: KVM guests cannot run",
                    pytrace=False)


@pytest.fixture(scope="session")
def workdir():
    # libvirt runs qemu as its own user: the directories holding guest
    # disks must be traversable by it, which pytest's 0700 tmp dirs are not.
    path = tempfile.mkdtemp(prefix="cs2os-ft-%s-" % RUN_ID, dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def services(workdir):
    _require_binaries()
    _require_broker()
    _rabbitmqctl("add_vhost", VHOST)
    user = urllib.parse.urlsplit(BROKER_URL).username or "guest"
    _rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*")
    _require_libvirt()
    exchange = "cs2os-test-%s" % RUN_ID
    client_conf = os.path.join(workdir, "client.conf")
    with open(client_conf, "w") as f:
        f.write("[DEFAULT]\ntransport_url = %s\ncontrol_exchange = %s\n"
                "rpc_response_timeout = %d\n"
                % (TRANSPORT_URL, exchange, RPC_RESPONSE_TIMEOUT))
    config.parse_args(["--config-file", client_conf],
                      default_config_files=[])
    rpc.init(conf.CONF)
    yield {"exchange": exchange}
    rpc.cleanup()
    _rabbitmqctl("delete_vhost", VHOST)


@pytest.fixture(scope="session")
def agent_api(services):
    return rpcapi.AgentAPI()


@pytest.fixture
def ctxt():
    return cs2os_context.RequestContext(user_id="tester", project_id="ft")


@pytest.fixture(scope="session")
def instances_path(workdir):
    path = os.path.join(workdir, "instances")
    os.makedirs(path, mode=0o755)
    return path


@pytest.fixture(scope="session")
def cloudstack_root(workdir):
    path = os.path.join(workdir, "cloudstack")
    os.makedirs(path, mode=0o755)
    return path


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


@pytest.fixture(scope="session")
def agents(workdir, services, agent_api, instances_path, cloudstack_root):
    factory = AgentFactory(workdir, services, agent_api, instances_path,
                           cloudstack_root)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def agent(agents):
    """The shared agent most tests drive."""
    return agents.start("main")


@pytest.fixture(scope="session")
def libvirt_conn(services):
    conn = libvirt.open(LIBVIRT_URI)
    yield conn
    conn.close()


@pytest.fixture
def nova_instance(libvirt_conn, instances_path, cloudstack_root):
    """Factory: a Nova-like instance (D, C, persistent domain) on a template.

    The domain is defined like Nova does it and removed afterwards.
    """
    made = []

    def make(template, disk_size, start=False):
        inst = images.make_nova_instance(
            instances_path, template, disk_size, "cs2os-test-%s" % RUN_ID
        )
        dom = libvirt_conn.defineXML(inst.domain_xml())
        made.append(dom)
        if start:
            dom.create()
        inst.domain = dom
        return inst

    yield make
    for dom in made:
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass


@pytest.fixture
def cloudstack_volume(cloudstack_root):
    def make(**kwargs):
        return images.make_cloudstack_volume(cloudstack_root, **kwargs)

    return make


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


@pytest.fixture(scope="session")
def conductor_stub(services):
    from cs2os_agent.conductor import rpcapi as conductor_rpcapi

    endpoint = RecordingConductor()
    server = rpc.get_server(
        messaging.Target(topic=conductor_rpcapi.TOPIC,
                         server="conductor-%s" % RUN_ID),
        [endpoint],
    )
    server.start()
    yield endpoint
    server.stop()
    server.wait()
