"""Fixtures of the fault suite: the end-to-end chain, restartable.

The e2e fixtures (tests/e2e/conftest.py) are reused as they are: the
minicloud, the CloudStack stand-in (``cloud``), the conductor RPC client.
The agent and the conductor here are the warm chain's (a superset of the
cold one: the KVM host's sshd key, a [mirror] section, the KVM host's
libvirt URI), so one agent and one conductor serve cold and warm
migrations alike; the sweep stops and launches them itself, with
CS2OS_CRASH_AT in their environment (cs2os_agent/common/faultpoints.py).

Every name carries RUN_ID (tools/testbed/harness.py); only processes
started here are stopped, by PID.
"""

import os

import pytest

from cs2os_agent.common import context as cs2os_context
from tests.e2e.conftest import cloud  # noqa: F401 - fixture
from tests.e2e.conftest import conductor_api  # noqa: F401 - fixture
from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import kvm_sshd  # noqa: F401 - fixture
from tests.e2e.conftest import minicloud  # noqa: F401 - fixture
from tests.e2e.conftest import remote_dir  # noqa: F401 - fixture
from tests.faults import report as fault_report
from tools.testbed import harness as ft
from tools.testbed import warm_chain
from tools.testbed.minicloud import admin_auth

RUN_ID = ft.RUN_ID


def pytest_configure(config):
    fault_report.configure(config)


def pytest_sessionfinish(session, exitstatus):
    fault_report.finish(session)


@pytest.fixture(scope="module")
def mirror_run_dir(workdir, request):
    return os.path.join(workdir, "faults-mirror-%s"
                        % request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def agent(workdir, services, agent_api, minicloud,  # noqa: F811
          cloudstack_root, kvm_sshd, remote_dir,  # noqa: F811
          mirror_run_dir):
    proc = warm_chain.make_agent(
        workdir, minicloud.compute_host, ft.TRANSPORT_URL,
        services["exchange"], minicloud.instances_path, cloudstack_root,
        kvm_sshd, remote_dir, mirror_run_dir)
    proc.probe = lambda: agent_api.get_agent_info(
        cs2os_context.get_admin_context(), proc.host, timeout=2)
    proc.launch()
    proc.wait_ready(proc.probe)
    yield proc
    proc.stop()


def make_conductor(request, workdir, services, cloud,  # noqa: F811
                   minicloud, cloudstack_root, kvm_sshd,  # noqa: F811
                   suffix="", **conductor_options):
    """A ConductorProcess (not started) on its own sqlite database, with
    ``db_path``."""
    name = "%s-faults-%s%s" % (RUN_ID,
                               request.module.__name__.rsplit(".", 1)[-1],
                               suffix)
    proc = warm_chain.make_conductor(
        workdir, name, ft.TRANSPORT_URL, services["exchange"], cloud,
        admin_auth(minicloud), cloudstack_root, kvm_sshd,
        **conductor_options)
    proc.db_path = os.path.join(workdir, "e2e-%s.sqlite" % name)
    return proc


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud,  # noqa: F811
              agent, cloudstack_root, kvm_sshd):  # noqa: F811
    proc = make_conductor(request, workdir, services, cloud, minicloud,
                          cloudstack_root, kvm_sshd)
    proc.manage("db", "sync")
    proc.start()
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


@pytest.fixture
def ctxt():
    return cs2os_context.RequestContext(user_id="faults", project_id="admin")
