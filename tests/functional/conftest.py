"""Fixtures several functional test modules share."""

import libvirt
import pytest

from tests.functional import checks
from tools.testbed import cloudstack_api
from tools.testbed import conductor_process
from tools.testbed import harness


@pytest.fixture(scope="module")
def cloud():
    """The CloudStack API stand-in, serving, with an admin account; no KVM
    host behind it (the modules that need VMs make their own)."""
    api = cloudstack_api.FakeCloudStack()
    api.admin = api.add_account("admin")
    api.endpoint = api.serve()
    yield api
    api.shutdown()


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud):
    """A cs2os-conductor process in front of ``cloud``, on a SQLite file
    of its own named after the module (modules that need another kind of
    conductor define their own ``conductor``)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    proc = conductor_process.start_for_cloud(
        workdir, "cs2os-%s-%s" % (module, harness.RUN_ID),
        harness.TRANSPORT_URL, services["exchange"], cloud)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def conn():
    """This machine's libvirtd (the live mode tests' A and B run there);
    a missing one fails, never skips."""
    checks.require_binaries()
    checks.require_libvirt()
    c = libvirt.open(harness.LIBVIRT_URI)
    yield c
    c.close()
