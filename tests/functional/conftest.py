"""Fixtures several functional test modules share."""

import pytest

from tools.testbed import cloudstack_api


@pytest.fixture(scope="module")
def cloud():
    """The CloudStack API stand-in, serving, with an admin account; no KVM
    host behind it (the modules that need VMs make their own)."""
    api = cloudstack_api.FakeCloudStack()
    api.admin = api.add_account("admin")
    api.endpoint = api.serve()
    yield api
    api.shutdown()
