"""OpenStackClient.reset_state (os-resetState) on the minicloud's real
Nova: what a live migration's move does while Nova's domain waits paused
for the guest.  A SHUTOFF server becomes ACTIVE in Nova's record while
its domain stays as it was; an unknown server is a clear OpenStackError.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.openstack import client as openstack_client
from tests.e2e.conftest import minicloud  # noqa: F401 - fixture
from tools.testbed import harness
from tools.testbed.minicloud import smoke

RUN_ID = harness.RUN_ID


@pytest.fixture(scope="module")
def nova(workdir, minicloud):  # noqa: F811
    info, conn = minicloud.info, minicloud.conn
    image = smoke.upload_image(conn, str(workdir), "RESET-%s" % RUN_ID,
                               name="cs2os-reset-%s" % RUN_ID)
    server = smoke.boot(conn, info, image, name="cs2os-reset-%s" % RUN_ID)
    yield info, conn, server
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=120)
    conn.image.delete_image(image)


def test_a_stopped_server_is_reset_to_active(nova):
    info, conn, server = nova
    client = openstack_client.OpenStackClient(conn, wait_timeout=120,
                                              poll_interval=1)
    assert client.stop_server(server.id).status == "SHUTOFF"
    client.reset_state(server.id, "active")
    after = conn.compute.get_server(server.id)
    assert after.status == "ACTIVE"
    assert after.vm_state == "active"
    # Nova's record only: its domain is still shut off.
    assert smoke.domain_state(info, after) in ("shut off", "")


def test_an_unknown_server_is_a_clear_error(nova):
    _info, conn, _server = nova
    client = openstack_client.OpenStackClient(conn)
    with pytest.raises(exception.OpenStackError) as err:
        client.reset_state("00000000-0000-4000-8000-%s0000" % RUN_ID[:8])
    assert "reset the state of server" in str(err.value)
