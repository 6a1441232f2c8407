"""cs2os adopts only the servers and ports it created itself (real cloud).

A retry finds what an earlier attempt of the same migration made
(find_server by the cs2os_migration_id metadata, find_port by the port's
name) and later stops, attaches, deletes or replaces the disk of it.  Here
other users of the minicloud's real Nova and Neutron set that metadata and
that name on resources of their own: the non-admin "demo" project, and a
second user of cs2os's own project.  None of theirs is found; what cs2os's
own connection (the admin's, as the conductor's [openstack] section) made
is.  Everything is named after the run and deleted at the end.
"""

import secrets
import uuid

import openstack
import pytest

from cs2os_agent.openstack import client as os_client
from cs2os_agent.openstack import network as os_network
from tools.testbed.harness import RUN_ID
from tools.testbed.minicloud import smoke

PREFIX = "cs2os-e2e-%s-adopt" % RUN_ID


def migration_id():
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def demo(minicloud):
    conn = minicloud.connect(minicloud.info["demo_cloud"])
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def colleague(minicloud):
    """A second user with the member role in cs2os's own project."""
    admin = minicloud.conn
    project_id = admin.current_project_id
    password = secrets.token_urlsafe(24)
    user = admin.identity.create_user(name="%s-colleague" % PREFIX,
                                      password=password, domain_id="default")
    try:
        role = admin.identity.find_role("member", ignore_missing=False)
        admin.identity.assign_project_role_to_user(project_id, user, role)
        conn = openstack.connect(
            auth_url=minicloud.info["auth_url"], username=user.name,
            password=password, user_domain_id="default",
            project_id=project_id,
            region_name=minicloud.info.get("region_name", "RegionOne"),
            interface="public", identity_api_version="3")
        try:
            assert conn.current_project_id == project_id
            assert conn.current_user_id == user.id != admin.current_user_id
            yield conn
        finally:
            conn.close()
    finally:
        admin.identity.delete_user(user)


@pytest.fixture(scope="module")
def image(minicloud, tmp_path_factory):
    admin = minicloud.conn
    made = smoke.upload_image(admin, str(tmp_path_factory.mktemp("adopt")),
                              "cs2os adoption %s" % RUN_ID,
                              name="%s-image" % PREFIX)
    try:
        # Public: the demo user and the colleague boot from it too.
        admin.image.update_image(made, visibility="public")
        yield made
    finally:
        admin.image.delete_image(made, ignore_missing=True)


@pytest.fixture(scope="module")
def flavor(minicloud):
    (tiny,) = [f for f in minicloud.conn.compute.flavors()
               if f.name == "m1.tiny"]
    return tiny


@pytest.fixture
def servers(minicloud):
    made = []
    yield made
    admin = minicloud.conn
    for server in made:
        admin.compute.delete_server(server.id, ignore_missing=True)
    for server in made:
        admin.compute.wait_for_delete(server, wait=180)


@pytest.fixture
def neutron(minicloud):
    """Networks and ports to delete at the end: [(conn, resource)]."""
    made = {"ports": [], "networks": []}
    yield made
    admin = minicloud.conn
    for port in made["ports"]:
        admin.network.delete_port(port.id, ignore_missing=True)
    for net in made["networks"]:
        admin.network.delete_network(net.id, ignore_missing=True)


def boot_with_metadata(conn, name, image, flavor, mid):
    """What a user can do through Nova's API: their own server, carrying
    cs2os's metadata key with a migration id they learnt."""
    return conn.compute.create_server(
        name=name, image_id=image.id, flavor_id=flavor.id, networks="none",
        metadata={os_client.MIGRATION_KEY: mid})


def seen_by_metadata(minicloud, mid):
    """What the old lookup saw: any server, any project, by metadata."""
    return {s.id for s in minicloud.conn.compute.servers(all_projects=True,
                                                         details=True)
            if (s.metadata or {}).get(os_client.MIGRATION_KEY) == mid}


def test_only_the_services_own_server_is_adopted(
        minicloud, demo, colleague, image, flavor, servers):
    mid = migration_id()
    service = os_client.OpenStackClient(minicloud.conn)
    tenant = boot_with_metadata(demo, "%s-demo" % PREFIX, image, flavor,
                                mid)
    servers.append(tenant)
    peer = boot_with_metadata(colleague, "%s-colleague" % PREFIX, image,
                              flavor, mid)
    servers.append(peer)
    # Both carry the metadata, and cs2os's admin connection sees them.
    assert seen_by_metadata(minicloud, mid) == {tenant.id, peer.id}
    assert minicloud.conn.compute.get_server(tenant.id).project_id == (
        demo.current_project_id) != service.conn.current_project_id
    assert minicloud.conn.compute.get_server(peer.id).project_id == (
        service.conn.current_project_id)

    # A retry of migration `mid` must boot its own server, not take theirs.
    assert service.find_server(mid) is None

    ours = service.create_server("%s-service" % PREFIX, image.id, flavor.id,
                                 minicloud.compute_host, mid, {})
    servers.append(ours)
    assert seen_by_metadata(minicloud, mid) == {tenant.id, peer.id, ours.id}
    found = service.find_server(mid)
    assert found is not None and found.id == ours.id
    assert (found.project_id, found.user_id) == (
        minicloud.conn.current_project_id, minicloud.conn.current_user_id)
    # Another migration's id finds nothing, ours included.
    assert service.find_server(migration_id()) is None


def test_only_the_services_own_port_is_adopted(minicloud, demo, neutron):
    admin = minicloud.conn
    service = os_network.NetworkClient(admin)
    mid = migration_id()
    name = os_network.port_name(mid, 0)
    suffix = RUN_ID[:2], RUN_ID[2:4], RUN_ID[4:6]

    # The demo project's own network: there it may choose the MAC too,
    # the very MAC the CloudStack NIC has.
    demo_net = demo.network.create_network(name="%s-demo" % PREFIX)
    neutron["networks"].append(demo_net)
    mac = "1e:%s:%s:%s:01:01" % suffix
    bait = demo.network.create_port(name=name, network_id=demo_net.id,
                                    mac_address=mac)
    neutron["ports"].append(bait)
    assert bait.project_id == demo.current_project_id
    assert [p.id for p in admin.network.ports(name=name)] == [bait.id]
    assert service.find_port(name) is None
    assert service.find_port(name, network_id=demo_net.id, mac=mac) is None

    # A shared network (cs2os's): the demo user's port there has the name.
    shared = admin.network.create_network(name="%s-shared" % PREFIX,
                                          shared=True)
    neutron["networks"].append(shared)
    tenant = demo.network.create_port(name=name, network_id=shared.id)
    neutron["ports"].append(tenant)
    assert tenant.project_id == demo.current_project_id
    assert service.find_port(name, network_id=shared.id) is None
    assert service.find_port(name, network_id=shared.id,
                             mac=tenant.mac_address) is None

    # cs2os's own port of that name on that network is the one adopted.
    our_mac = "1e:%s:%s:%s:01:02" % suffix
    ours = service.create_port(name, shared.id, our_mac)
    neutron["ports"].append(ours)
    assert {p.id for p in admin.network.ports(name=name)} == {
        bait.id, tenant.id, ours.id}
    for found in (service.find_port(name),
                  service.find_port(name, network_id=shared.id),
                  service.find_port(name, network_id=shared.id,
                                    mac=our_mac)):
        assert found is not None and found.id == ours.id
    # ... but not when the record expects another network or MAC.
    assert service.find_port(name, network_id=demo_net.id) is None
    assert service.find_port(name, network_id=shared.id,
                             mac=tenant.mac_address) is None
    assert service.find_port(name, network_id=shared.id, mac=mac) is None
