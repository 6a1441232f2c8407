"""cs2os adopts only the servers and ports it made itself.

find_server and find_port let a retry pick up what an earlier attempt
created; what they return is later stopped, attached, deleted on rollback
or has its disk replaced.  A tenant who learns a migration id can set the
metadata or the port name on resources of their own: those must never be
found.  The fake connection answers like Nova and Neutron do for an admin
token, and also (``leaky``) with everything, so that the client's own
checks are what is tested.
"""

import types

import pytest
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as sdk_exc

from cs2os_agent.common import exception
from cs2os_agent.openstack import client as os_client
from cs2os_agent.openstack import network as os_network

SERVICE_PROJECT = "p-service"
SERVICE_USER = "u-cs2os"
MIGRATION = "0b7f3e0c-0000-4000-8000-000000000001"
NET = "net-1"
MAC = "1e:00:00:00:00:01"


def server(sid, project_id=SERVICE_PROJECT, user_id=SERVICE_USER,
           migration_id=MIGRATION, tags=None):
    return types.SimpleNamespace(
        id=sid, project_id=project_id, user_id=user_id,
        metadata={os_client.MIGRATION_KEY: migration_id} if migration_id
        else {},
        tags=[os_client.MIGRATION_TAG % migration_id] if tags is None
        else tags)


def port(pid, name, project_id=SERVICE_PROJECT, network_id=NET, mac=MAC):
    return types.SimpleNamespace(id=pid, name=name, project_id=project_id,
                                 network_id=network_id, mac_address=mac)


class FakeCompute:
    def __init__(self, conn):
        self.conn = conn
        self.servers_ = []
        self.queries = []

    def servers(self, **query):
        self.queries.append(query)
        for s in self.servers_:
            # Nova: without all_projects, the token's project only; with
            # tags, the servers that have each one.
            if self.conn.leaky or (
                    (query.get("all_projects")
                     or s.project_id == self.conn.current_project_id)
                    and query.get("tags", "") in s.tags + [""]):
                yield s


class FakeNetwork:
    def __init__(self, conn):
        self.conn = conn
        self.ports_ = []
        self.queries = []

    def ports(self, **filters):
        self.queries.append(filters)
        for p in self.ports_:
            if self.conn.leaky or all(getattr(p, key) == value
                                      for key, value in filters.items()):
                yield p


class FakeConn:
    def __init__(self, project_id=SERVICE_PROJECT, user_id=SERVICE_USER):
        self._project_id, self._user_id = project_id, user_id
        self.leaky = False  # True: the APIs ignore every filter
        self.compute = FakeCompute(self)
        self.network = FakeNetwork(self)

    @property
    def current_project_id(self):
        if isinstance(self._project_id, Exception):
            raise self._project_id
        return self._project_id

    @property
    def current_user_id(self):
        return self._user_id


@pytest.fixture(params=[False, True], ids=["api-filters", "leaky-api"])
def conn(request):
    c = FakeConn()
    c.leaky = request.param
    return c


# -- servers ---------------------------------------------------------------


def test_the_services_own_server_is_found(conn):
    ours = server("ours")
    conn.compute.servers_ = [server("other-migration", migration_id="x"),
                             ours]
    assert os_client.OpenStackClient(conn).find_server(MIGRATION) is ours
    # Nova is asked for the token's own project, never all projects, and
    # for the migration's tag: not for every server of the cloud.
    assert conn.compute.queries == [{
        "details": True, "tags": "cs2os-migration:%s" % MIGRATION}]


def test_a_tag_without_the_metadata_is_not_enough(conn):
    # Tags are the server owner's to set, like metadata: both must agree.
    conn.compute.servers_ = [server("tagged", migration_id="x",
                                    tags=["cs2os-migration:%s" % MIGRATION])]
    assert os_client.OpenStackClient(conn).find_server(MIGRATION) is None


def test_a_tenants_server_with_the_metadata_is_not_adopted(conn):
    conn.compute.servers_ = [server("tenant", project_id="p-tenant",
                                    user_id="u-tenant")]
    assert os_client.OpenStackClient(conn).find_server(MIGRATION) is None


def test_another_user_of_the_service_project_is_not_cs2os(conn):
    conn.compute.servers_ = [server("colleague", user_id="u-colleague")]
    assert os_client.OpenStackClient(conn).find_server(MIGRATION) is None


def test_a_server_of_cs2os_user_in_another_project_is_not_adopted(conn):
    # The same user id in another project (a role there too): not ours.
    conn.compute.servers_ = [server("elsewhere", project_id="p-tenant")]
    assert os_client.OpenStackClient(conn).find_server(MIGRATION) is None


def test_ours_is_found_among_foreign_lookalikes(conn):
    ours = server("ours")
    conn.compute.servers_ = [
        server("tenant", project_id="p-tenant", user_id="u-tenant"),
        server("colleague", user_id="u-colleague"), ours]
    assert os_client.OpenStackClient(conn).find_server(MIGRATION) is ours


@pytest.mark.parametrize("project_id,user_id", [(None, SERVICE_USER),
                                                (SERVICE_PROJECT, None)])
def test_an_unscoped_token_finds_nothing_and_says_why(project_id, user_id):
    c = FakeConn(project_id, user_id)
    c.compute.servers_ = [server("ours")]
    with pytest.raises(exception.OpenStackError, match="not scoped"):
        os_client.OpenStackClient(c).find_server(MIGRATION)


def test_keystone_failure_is_an_openstack_error():
    c = FakeConn(project_id=ks_exc.ConnectFailure("keystone down"))
    with pytest.raises(exception.OpenStackError, match="keystone down"):
        os_client.OpenStackClient(c).find_server(MIGRATION)
    with pytest.raises(exception.OpenStackError, match="keystone down"):
        os_network.NetworkClient(c).find_port("x")


# -- ports -----------------------------------------------------------------


NAME = os_network.port_name(MIGRATION, 0)


def test_the_services_own_port_is_found(conn):
    ours = port("ours", NAME)
    conn.network.ports_ = [port("tenant", NAME, project_id="p-tenant",
                                mac="1e:00:00:00:00:99"), ours]
    neutron = os_network.NetworkClient(conn)
    assert neutron.find_port(NAME, network_id=NET, mac=MAC) is ours
    assert conn.network.queries[-1] == {
        "name": NAME, "project_id": SERVICE_PROJECT, "network_id": NET,
        "mac_address": MAC}
    # The old call, by name only, is still cs2os's project only.
    assert neutron.find_port(NAME) is ours
    assert conn.network.queries[-1] == {"name": NAME,
                                        "project_id": SERVICE_PROJECT}


def test_a_tenants_port_with_the_name_is_not_adopted(conn):
    conn.network.ports_ = [port("tenant", NAME, project_id="p-tenant")]
    neutron = os_network.NetworkClient(conn)
    assert neutron.find_port(NAME, network_id=NET, mac=MAC) is None
    assert neutron.find_port(NAME) is None


def test_a_port_on_another_network_or_mac_is_not_adopted(conn):
    conn.network.ports_ = [port("other-net", NAME, network_id="net-2"),
                           port("other-mac", NAME, mac="1e:00:00:00:00:02")]
    neutron = os_network.NetworkClient(conn)
    assert neutron.find_port(NAME, network_id=NET, mac=MAC) is None


def test_a_port_of_another_name_is_not_adopted(conn):
    conn.network.ports_ = [port("nic1", os_network.port_name(MIGRATION, 1))]
    assert os_network.NetworkClient(conn).find_port(NAME) is None


def test_the_mac_compares_without_case():
    c = FakeConn()
    ours = port("ours", NAME, mac=MAC)
    c.leaky = True  # Neutron would match the filter case-insensitively
    c.network.ports_ = [ours]
    assert os_network.NetworkClient(c).find_port(
        NAME, network_id=NET, mac=MAC.upper()) is ours


# -- the commit point's one exception (conductor/flow/commit.py takes the
# commit back only for StartRefused): a start Nova refused outright --------


class _Compute:
    def __init__(self, error):
        self.error = error

    def get_server(self, server_id):
        return types.SimpleNamespace(id=server_id, status="SHUTOFF")

    def start_server(self, server_id):
        raise self.error


@pytest.mark.parametrize("status, refused", [
    (401, True), (403, True), (404, True), (409, False), (500, False),
    (503, False)])
def test_only_a_start_refused_outright_counts_as_not_started(status,
                                                             refused):
    error = sdk_exc.HttpException(message="nova says %d" % status,
                                  http_status=status)
    nova = os_client.OpenStackClient(types.SimpleNamespace(
        compute=_Compute(error)))
    with pytest.raises(exception.OpenStackError) as caught:
        nova.request_start("srv-1")
    assert isinstance(caught.value, exception.StartRefused) is refused
    assert "start server srv-1" in str(caught.value)
    assert "nova says %d" % status in str(caught.value)
