"""Fixtures of the functional and end-to-end tests (real components).

See tests/functional/checks.py for what they check and
tools/testbed/harness.py for how they name what they create.
"""

import os
import shutil
import tempfile
import urllib.parse

import libvirt
import oslo_messaging as messaging
import pytest

from cs2os_agent import virt
from cs2os_agent.agent import rpcapi
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import rpc
from tests.functional import checks
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import service


@pytest.fixture(scope="session", autouse=True)
def _libvirt_init():
    """What the services' mains do first (virt.init): libvirt prints no
    expected error to the tests' stderr."""
    virt.init()


@pytest.fixture(scope="session")
def workdir():
    # libvirt runs qemu as its own user: the directories holding guest
    # disks must be traversable by it, which pytest's 0700 tmp dirs are not.
    path = tempfile.mkdtemp(prefix="cs2os-ft-%s-" % harness.RUN_ID,
                            dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def services(workdir):
    checks.require_binaries()
    checks.require_broker()
    # Each run gets a vhost of its own: queue names are global in a vhost,
    # so two runs' servers on one topic would take each other's messages.
    checks.rabbitmqctl("add_vhost", harness.VHOST)
    user = urllib.parse.urlsplit(harness.BROKER_URL).username or "guest"
    checks.rabbitmqctl("set_permissions", "-p", harness.VHOST, user,
                       ".*", ".*", ".*")
    checks.require_libvirt()
    exchange = "cs2os-test-%s" % harness.RUN_ID
    service.init_rpc_client(workdir, harness.TRANSPORT_URL, exchange,
                            harness.RPC_RESPONSE_TIMEOUT)
    yield {"exchange": exchange}
    rpc.cleanup()
    checks.rabbitmqctl("delete_vhost", harness.VHOST)


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


@pytest.fixture(scope="session")
def agents(workdir, services, agent_api, instances_path, cloudstack_root):
    factory = harness.AgentFactory(workdir, services, agent_api,
                                   instances_path, cloudstack_root)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def agent(agents):
    """The shared agent most tests drive."""
    return agents.start("main")


@pytest.fixture(scope="session")
def libvirt_conn(services):
    conn = libvirt.open(harness.LIBVIRT_URI)
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
            instances_path, template, disk_size,
            "cs2os-test-%s" % harness.RUN_ID)
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


@pytest.fixture(scope="module")
def conductor_stub(services):
    """Records the agents' progress casts, as the conductor will.

    Per module: a real conductor (tests/functional/test_conductor.py,
    tests/e2e) listens on the same topic, and must not share it.
    """
    from cs2os_agent.conductor import rpcapi as conductor_rpcapi

    endpoint = harness.RecordingConductor()
    server = rpc.get_server(
        messaging.Target(topic=conductor_rpcapi.TOPIC,
                         server="conductor-%s" % harness.RUN_ID),
        [endpoint],
    )
    server.start()
    yield endpoint
    server.stop()
    server.wait()


@pytest.fixture
def instance(cloudstack_volume, nova_instance):
    """A Nova-like instance on a fresh CloudStack volume's template."""
    vol = cloudstack_volume()
    inst = nova_instance(vol.template, 64 * images.MiB)
    inst.volume = vol
    return inst
