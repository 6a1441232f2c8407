"""Each CloudStack NIC becomes a Neutron port with the same MAC and IP.

A real Neutron (ML2/Open vSwitch, userspace datapath) in the minicloud:
the ports are created by cs2os-conductor before Nova boots the server,
bound by the real openvswitch agent, and libvirt's domain carries the
MACs in CloudStack's NIC order.
"""

import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import new_vm
from tests.e2e.conftest import refuse_to_stop
from tools.testbed.harness import wait_state

SUFFIX = (RUN_ID[0:2], RUN_ID[2:4], RUN_ID[4:6])


def mac(last):
    # A MAC per run: a leftover of another run can never collide.
    return "1e:%s:%s:%s:00:%02x" % (*SUFFIX, last)


@pytest.fixture(scope="module")
def networks(minicloud):
    conn = minicloud.conn
    made = {}
    for key, cidr in (("guest", "10.50.0.0/24"), ("backend", "10.60.0.0/24")):
        net = conn.network.create_network(name="cs2os-%s-%s" % (key, RUN_ID))
        conn.network.create_subnet(network_id=net.id, ip_version=4,
                                   cidr=cidr, enable_dhcp=False,
                                   name="cs2os-%s-%s" % (key, RUN_ID))
        made[key] = net
    yield made
    for net in made.values():
        for port in conn.network.ports(network_id=net.id):
            conn.network.delete_port(port)
        conn.network.delete_network(net)


@pytest.fixture(scope="module")
def cs_networks(cloud):
    zone = cloud.kvm_host.zone
    return {key: cloud.add_network(zone, "cs-%s-%s" % (key, RUN_ID))
            for key in ("guest", "backend")}


def request_for(vm, networks, cs_networks, **extra):
    return dict({"source": vm.name, "networks": {
        cs_networks["guest"].name: networks["guest"].name,
        cs_networks["backend"].id: networks["backend"].id}}, **extra)


def domain_macs(minicloud, server_id):
    conn = libvirt.open(minicloud.info["libvirt_uri"])
    try:
        xml = conn.lookupByUUIDString(server_id).XMLDesc(0)
    finally:
        conn.close()
    return [i.find("mac").get("address")
            for i in ET.fromstring(xml).findall("./devices/interface")]


def our_ports(minicloud, migration_id):
    return [p for p in minicloud.conn.network.ports()
            if p.name.startswith("cs2os-%s-" % migration_id)]


def test_two_nics_keep_their_macs_and_ips_in_order(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        networks, cs_networks):
    vm = new_vm(cloud, cloudstack_root, nics=[
        (cs_networks["guest"], "10.50.0.50", mac(1)),
        (cs_networks["backend"], "10.60.0.9", mac(2))])
    created = conductor_api.create_migration(
        ctxt, request_for(vm, networks, cs_networks,
                          host=minicloud.compute_host))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    server_id = done["resources"]["server_id"]
    nics = done["result"]["nics"]
    assert [(n["mac"], n["ip"], n["ip_preserved"]) for n in nics] == [
        (mac(1), "10.50.0.50", True), (mac(2), "10.60.0.9", True)]
    for nic, key in zip(nics, ("guest", "backend"), strict=True):
        port = minicloud.conn.network.get_port(nic["port_id"])
        assert port.network_id == networks[key].id
        assert port.mac_address == nic["mac"]
        assert [f["ip_address"] for f in port.fixed_ips] == [nic["ip"]]
        assert port.device_id == server_id
        assert port.binding_host_id == minicloud.compute_host
    assert domain_macs(minicloud, server_id) == [mac(1), mac(2)]
    server = minicloud.conn.compute.get_server(server_id)
    assert server.status == "ACTIVE"


def test_an_ip_outside_the_subnets_gets_a_new_one(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        networks, cs_networks):
    vm = new_vm(cloud, cloudstack_root, nics=[
        (cs_networks["guest"], "172.16.5.5", mac(3))])
    created = conductor_api.create_migration(
        ctxt, request_for(vm, networks, cs_networks))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", (done["error"], done["events"])
    (nic,) = done["result"]["nics"]
    assert nic["mac"] == mac(3)
    assert (nic["cloudstack_ip"], nic["ip_preserved"]) == ("172.16.5.5",
                                                          False)
    assert nic["ip"].startswith("10.50.0.")


def test_a_mac_used_by_a_foreign_port_is_refused_before_anything(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        networks, cs_networks):
    foreign = minicloud.conn.network.create_port(
        network_id=networks["backend"].id, mac_address=mac(4),
        name="someone-else-%s" % RUN_ID)
    vm = new_vm(cloud, cloudstack_root, nics=[
        (cs_networks["guest"], "10.50.0.60", mac(4))])
    created = conductor_api.create_migration(
        ctxt, request_for(vm, networks, cs_networks))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert (done["state"], done["step"]) == ("failed", "validate")
    assert "MAC %s" % mac(4) in done["error"]
    assert foreign.id in done["error"]
    assert our_ports(minicloud, created["id"]) == []
    assert "server_id" not in done["resources"]
    assert cloud.vm_state(vm) == "Running"


def test_unmapped_nic_is_named_unless_dropped(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        networks, cs_networks):
    stray = cloud.add_network(cloud.kvm_host.zone, "cs-stray-%s" % RUN_ID)
    vm = new_vm(cloud, cloudstack_root, nics=[
        (cs_networks["guest"], "10.50.0.70", mac(5)),
        (stray, "10.99.0.1", mac(6))])
    created = conductor_api.create_migration(
        ctxt, request_for(vm, networks, cs_networks))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert (done["state"], done["step"]) == ("failed", "validate")
    assert "no Neutron network mapped for NIC 1 (%s on CloudStack " \
        "network %s)" % (mac(6), stray.name) in done["error"]
    created = conductor_api.create_migration(
        ctxt, request_for(vm, networks, cs_networks,
                          drop_unmapped_nics=True))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert [n["mac"] for n in done["result"]["nics"]] == [mac(5)]
    assert mac(6) in done["result"]["dropped_nics"][0]


def test_failure_after_ports_rolls_them_back_and_retry_succeeds(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        networks, cs_networks, monkeypatch):
    vm = new_vm(cloud, cloudstack_root, nics=[
        (cs_networks["guest"], "10.50.0.80", mac(7)),
        (cs_networks["backend"], "10.60.0.80", mac(8))])
    refuse_to_stop(monkeypatch, vm)
    created = conductor_api.create_migration(
        ctxt, request_for(vm, networks, cs_networks))
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert (done["state"], done["step"]) == ("failed", "stop_source"), \
        done["error"]
    undone = done["result"]["rolled_back"]
    # The stop failed and the VM runs: the rollback starts nothing.
    assert [m.split()[:2] for m in undone] == [
        ["deleted", "server"], ["deleted", "ports"]], undone
    assert our_ports(minicloud, created["id"]) == []
    # Nothing else was touched: the other tests' ports are still there.
    assert cloud.vm_state(vm) == "Running"

    monkeypatch.undo()  # the stand-in stops VMs again
    conductor_api.retry_migration(ctxt, created["id"])
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    ports = our_ports(minicloud, created["id"])
    assert sorted(p.mac_address for p in ports) == [mac(7), mac(8)]
    assert domain_macs(minicloud, done["resources"]["server_id"]) == [
        mac(7), mac(8)]
