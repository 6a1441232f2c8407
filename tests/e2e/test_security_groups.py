"""A VM's CloudStack security groups become Neutron security groups of the
target project, with the same rules, on the migrated server's ports.

The minicloud's real Neutron (ML2/Open vSwitch, security groups enabled;
the firewall driver is noop, so what is proven is what Neutron records and
would enforce): groups in a Keystone project of their own, where cs2os's
user has the admin role, as the README tells operators.  The CloudStack
groups are the stand-in's (SecurityGroupResponse shapes):

- web: ingress tcp 22 from 0.0.0.0/0 and icmp of any type; no egress rules
  (CloudStack: all egress);
- app: egress tcp 443 to 203.0.113.0/24 only, and ingress tcp 8080 from
  the VMs of web;
- db: ingress tcp 5432 from web.
"""

import uuid

import pytest

from cs2os_agent.common import context as cs2os_context
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import module_conductor
from tests.e2e.conftest import refuse_to_stop
from tests.e2e.conftest import shared_network
from tests.e2e.conftest import target_project
from tools.testbed import images
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_state

OCTETS = (int(RUN_ID[0:2], 16), int(RUN_ID[2:4], 16))
WEB_CIDR = "203.0.113.0/24"


@pytest.fixture(scope="module")
def project(minicloud):
    """The customer's Keystone project; cs2os's user is admin there."""
    with target_project(minicloud, "cs2os-e2e-%s-sg" % RUN_ID) as made:
        yield made


@pytest.fixture(scope="module")
def network(minicloud):
    """A shared network of the admin's: the customer's ports live on it."""
    with shared_network(minicloud, "cs2os-sg-%s" % RUN_ID,
                        "10.%d.%d.0/24" % OCTETS) as net:
        yield net


@pytest.fixture(scope="module")
def owner(cloud):
    """The CloudStack account sg-<run>, its groups and a network."""
    account = cloud.add_account("sg-%s" % RUN_ID, admin=False)
    web = cloud.add_security_group(account, "web", "Web servers", ingress=[
        {"protocol": "tcp", "startport": 22, "endport": 22,
         "cidr": "0.0.0.0/0"},
        {"protocol": "icmp", "icmptype": -1, "icmpcode": -1}])
    app = cloud.add_security_group(account, "app", ingress=[
        {"protocol": "tcp", "startport": 8080, "endport": 8080,
         "securitygroup": web}], egress=[
        {"protocol": "tcp", "startport": 443, "endport": 443,
         "cidr": WEB_CIDR}])
    db = cloud.add_security_group(account, "db", ingress=[
        {"protocol": "tcp", "startport": 5432, "endport": 5432,
         "securitygroup": web}])
    return {"account": account, "web": web, "app": app, "db": db,
            "network": cloud.add_network(cloud.kvm_host.zone,
                                         "cs-sg-%s" % RUN_ID)}


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root, project, owner):
    """This module's conductor: the account's VMs into ``project``."""
    proc = module_conductor(
        request, workdir, services, cloud, minicloud, conductor_api,
        cloudstack_root, project_map="ROOT/%s:%s" % (
            owner["account"].name, project.id))
    yield proc
    proc.stop()


def grouped_vm(cloud, cloudstack_root, owner, index, groups):
    """A running VM of the account in CloudStack groups ``groups``."""
    volume = images.make_cloudstack_volume(cloudstack_root)
    vm = cloud.add_kvm_vm(
        "e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6]), volume,
        owner["account"], cloud.kvm_host, offering=cloud.offering,
        nics=[(owner["network"], "10.%d.%d.%d" % (*OCTETS, 10 + index),
               "1e:%02x:%02x:00:02:%02x" % (*OCTETS, index))],
        securitygroups=[owner[g] for g in groups])
    vm.volume = volume
    wait_console(cloud.kvm.console(vm.instancename), volume.message)
    return vm


def migrate(conductor_api, minicloud, network, owner, vm):
    ctxt = cs2os_context.RequestContext(user_id="e2e", project_id="admin")
    created = conductor_api.create_migration(ctxt, {
        "source": vm.name, "host": minicloud.compute_host,
        "networks": {owner["network"].name: network.id}})
    return wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))


def port_groups(minicloud, done):
    (nic,) = done["result"]["nics"]
    return minicloud.conn.network.get_port(nic["port_id"]).security_group_ids


def rules(minicloud, group_id, names):
    """The group's rules as (direction, ethertype, protocol, min, max,
    prefix, remote group by ``names``)."""
    return {(r.direction, r.ether_type, r.protocol, r.port_range_min,
             r.port_range_max, r.remote_ip_prefix,
             names.get(r.remote_group_id, r.remote_group_id))
            for r in minicloud.conn.network.security_group_rules(
                security_group_id=group_id)}


def groups_named(minicloud, project, name):
    return [g.id for g in minicloud.conn.network.security_groups(
        project_id=project.id) if g.name == name]


ANY_EGRESS = {("egress", "IPv4", None, None, None, None, None),
              ("egress", "IPv6", None, None, None, None, None)}


@pytest.fixture(scope="module")
def first(conductor, conductor_api, cloud, minicloud, cloudstack_root,
          network, owner):
    vm = grouped_vm(cloud, cloudstack_root, owner, 1, ["web", "app"])
    done = migrate(conductor_api, minicloud, network, owner, vm)
    assert done["state"] == "succeeded", (done["error"], done["events"])
    return vm, done


def test_the_port_has_exactly_the_mapped_groups_and_rules(
        first, minicloud, project, owner):
    _vm, done = first
    mapped = done["result"]["security_groups"]
    assert [(g["cloudstack_id"], g["name"], g["reused"], g["attached"])
            for g in mapped] == [(owner["web"].id, "web", False, True),
                                 (owner["app"].id, "app", False, True)]
    web, app = (g["neutron_id"] for g in mapped)
    assert sorted(port_groups(minicloud, done)) == sorted([web, app])
    assert sorted(done["resources"]["security_groups"]) == sorted([web, app])
    for gid, cs_group in ((web, owner["web"]), (app, owner["app"])):
        group = minicloud.conn.network.get_security_group(gid)
        assert (group.name, group.project_id) == (cs_group.name, project.id)
        assert group.description == "cs2os: CloudStack security group " \
            "%s (%s)" % (cs_group.id, cs_group.name)
    names = {web: "web", app: "app"}
    # web: what CloudStack lets in; no egress rules there, so all egress.
    assert rules(minicloud, web, names) == {
        ("ingress", "IPv4", "tcp", 22, 22, None, None),
        ("ingress", "IPv4", "icmp", None, None, None, None)} | ANY_EGRESS
    # app: egress to 443 only (Neutron's allow-all is gone), and 8080 from
    # the ports in web.
    assert rules(minicloud, app, names) == {
        ("ingress", "IPv4", "tcp", 8080, 8080, None, "web"),
        ("egress", "IPv4", "tcp", 443, 443, WEB_CIDR, None)}
    # CloudStack sums egress over the VM's groups, Neutron does not: said.
    assert [e for e in done["events"] if e["kind"] == "warning"
            and "web, which have no egress rules, allow all egress"
            in e["message"]]


def test_a_second_vm_in_the_group_reuses_it(
        first, conductor, conductor_api, cloud, minicloud, cloudstack_root,
        network, owner, project):
    web = first[1]["result"]["security_groups"][0]["neutron_id"]
    vm = grouped_vm(cloud, cloudstack_root, owner, 2, ["web"])
    done = migrate(conductor_api, minicloud, network, owner, vm)
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert port_groups(minicloud, done) == [web]
    (mapped,) = done["result"]["security_groups"]
    assert (mapped["neutron_id"], mapped["reused"]) == (web, True)
    # Nothing made: nothing for its rollback to delete.
    assert not done["resources"].get("security_groups")
    assert groups_named(minicloud, project, "web") == [web]


def test_a_vm_without_groups_gets_the_projects_default_group(
        conductor, conductor_api, cloud, minicloud, cloudstack_root,
        network, owner, project):
    vm = grouped_vm(cloud, cloudstack_root, owner, 3, [])
    done = migrate(conductor_api, minicloud, network, owner, vm)
    assert done["state"] == "succeeded", (done["error"], done["events"])
    assert done["result"]["security_groups"] == []
    assert port_groups(minicloud, done) == groups_named(minicloud, project,
                                                        "default")


def test_a_rollback_deletes_the_groups_it_made_not_those_it_reused(
        first, conductor, conductor_api, cloud, minicloud, cloudstack_root,
        network, owner, project, monkeypatch):
    web = first[1]["result"]["security_groups"][0]["neutron_id"]
    web_rules = rules(minicloud, web, {})
    vm = grouped_vm(cloud, cloudstack_root, owner, 4, ["web", "db"])
    refuse_to_stop(monkeypatch, vm)
    done = migrate(conductor_api, minicloud, network, owner, vm)
    assert (done["state"], done["step"]) == ("failed", "stop_source"), \
        done["error"]
    mapped = {g["name"]: g for g in done["result"]["security_groups"]}
    assert (mapped["web"]["neutron_id"], mapped["web"]["reused"]) == (
        web, True)
    db = mapped["db"]["neutron_id"]
    assert not mapped["db"]["reused"]
    assert [m for m in done["result"]["rolled_back"]
            if "deleted security groups %s" % db in m], \
        done["result"]["rolled_back"]
    assert groups_named(minicloud, project, "db") == []
    assert not done["resources"].get("security_groups")
    # web stays, as it was, on the first VM's port.
    assert groups_named(minicloud, project, "web") == [web]
    assert rules(minicloud, web, {}) == web_rules
    assert web in port_groups(minicloud, first[1])
    assert cloud.vm_state(vm) == "Running"
