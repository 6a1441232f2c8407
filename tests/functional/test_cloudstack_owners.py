"""Owners in the CloudStack stand-in, over its signed HTTP API.

A VM of a CloudStack project (a real KVM domain) and a stopped VM of an
account in a sub-domain, asked for with cs2os's CloudStackClient as cs2os
would ask: which lists show the project's VM (AccountManagerImpl.
buildACLSearchParameters), and the shapes of their owner, domain, tags,
details, SSH key pairs, user data and security groups.
"""

import base64
import hashlib

import pytest

from cs2os_agent.cloudstack import client as cs_client
from tests.functional import checks
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_kvm
from tools.testbed import harness
from tools.testbed import images

RUN_ID = harness.RUN_ID
# An ed25519 public key blob: its type, then 32 bytes of key.
KEY_BLOB = (b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
            + bytes(range(32)))
PUBLIC_KEY = "ssh-ed25519 %s me@laptop" % base64.b64encode(KEY_BLOB).decode()


@pytest.fixture(scope="module")
def cloud(cloudstack_root):
    checks.require_binaries()
    checks.require_libvirt()
    kvm = cloudstack_kvm.LibvirtKVM(cloudstack_root, harness.LIBVIRT_URI,
                                    stop_grace=1.0)
    api = cloudstack_api.FakeCloudStack(kvm)
    api.admin = api.add_account("admin")
    api.host = api.add_host(api.add_zone("zone-o-%s" % RUN_ID),
                            "kvm-o-%s" % RUN_ID, "127.0.0.1")
    api.sub = api.add_domain("sub-%s" % RUN_ID)
    api.leaf = api.add_domain("leaf", parent=api.sub)
    api.alice = api.add_account("alice", admin=False, domain=api.leaf)
    api.team = api.add_project("team-%s" % RUN_ID, domain=api.sub,
                               owner=api.alice)
    api.deploy = api.add_ssh_keypair(api.team, "deploy", PUBLIC_KEY)
    api.add_ssh_keypair(api.team, "spare", PUBLIC_KEY)
    api.mine = api.add_ssh_keypair(api.admin, "admins-own", PUBLIC_KEY)
    api.lb = api.add_security_group(api.team, "lb", "load balancers")
    api.web = api.add_security_group(
        api.team, "web", "web tier",
        ingress=[{"protocol": "tcp", "startport": 443, "endport": 443,
                  "cidr": "10.0.0.0/8"},
                 {"protocol": "icmp", "icmptype": 8, "icmpcode": 0},
                 {"protocol": "tcp", "startport": 80, "endport": 80,
                  "securitygroup": api.lb}],
        egress=[{"protocol": "all", "cidr": "0.0.0.0/0"}])
    api.endpoint = api.serve()
    yield api
    api.shutdown()


@pytest.fixture(scope="module")
def client(cloud):
    return cs_client.CloudStackClient(
        cloud.endpoint, cloud.admin.apikey, cloud.admin.secretkey,
        timeout=10, job_poll_interval=0.1, job_timeout=120)


@pytest.fixture(scope="module")
def project_vm(cloud, cloudstack_root):
    """Deployed by the root admin into the project; a running domain."""
    volume = images.make_cloudstack_volume(cloudstack_root)
    return cloud.add_kvm_vm(
        "proj-%s" % RUN_ID, volume, cloud.admin, cloud.host,
        project=cloud.team, tags={"tier": "web", "owner": "team"},
        details={"rootDiskController": "virtio"},
        keypairs=["deploy", "spare"], userdata="#cloud-config\nruncmd: []\n",
        securitygroups=[cloud.web])


@pytest.fixture(scope="module")
def domain_vm(cloud, cloudstack_root):
    """Alice's own VM in ROOT/sub-<run>/leaf; never started."""
    volume = images.make_cloudstack_volume(cloudstack_root)
    return cloud.add_kvm_vm("leafy-%s" % RUN_ID, volume, cloud.alice,
                            cloud.host, start=False)


def listed(client, command, key, **params):
    return client.call(command, **params).get(key, [])


def names(client, **params):
    return {vm["name"] for vm in listed(client, "listVirtualMachines",
                                        "virtualmachine", **params)}


def test_project_vm_is_listed_only_with_a_projectid(
        client, cloud, project_vm, domain_vm):
    assert project_vm.name not in names(client, listall=True)
    assert domain_vm.name in names(client, listall=True)
    # projectid=-1: the VMs of every project, and only those.
    assert names(client, projectid=-1) == {project_vm.name}
    assert names(client, projectid=cloud.team.id) == {project_vm.name}
    # ... with listall=true a root admin gets every VM (CloudStack 4.18+).
    assert {project_vm.name, domain_vm.name} <= names(
        client, projectid=-1, listall=True)
    # The project's volumes are listed the same way.
    assert listed(client, "listVolumes", "volume",
                  virtualmachineid=project_vm.id, listall=True) == []
    (root,) = listed(client, "listVolumes", "volume",
                     virtualmachineid=project_vm.id, projectid=cloud.team.id)
    assert root["type"] == "ROOT" and "account" not in root
    assert (root["projectid"], root["project"]) == (cloud.team.id,
                                                    cloud.team.name)
    assert root["domainpath"] == "ROOT/sub-%s" % RUN_ID


def test_project_vm_renders_its_project_not_an_account(
        client, cloud, project_vm):
    (vm,) = listed(client, "listVirtualMachines", "virtualmachine",
                   projectid=cloud.team.id)
    assert "account" not in vm
    assert (vm["projectid"], vm["project"]) == (cloud.team.id,
                                                cloud.team.name)
    assert (vm["domainid"], vm["domain"], vm["domainpath"]) == (
        cloud.sub.id, cloud.sub.name, "ROOT/sub-%s" % RUN_ID)
    # Deployed by the root admin: its user, the project's account.
    assert (vm["userid"], vm["username"]) == (cloud.admin.user_id, "admin")
    assert vm["instancename"] == "i-%d-%d-VM" % (
        cloud.team.account.internal_id, project_vm.internal_id)
    assert vm["state"] == "Running"


def test_project_vm_by_id_without_projectid(client, cloud, project_vm):
    # AccountManagerImpl.buildACLSearchParameters skips the projects'
    # resources only when no id is given: a root admin finds it by id.
    assert client.find_vm(project_vm.id)["project"] == cloud.team.name
    # A normal user, the project's admin, needs the projectid.
    alice = cs_client.CloudStackClient(
        cloud.endpoint, cloud.alice.apikey, cloud.alice.secretkey,
        timeout=10)
    assert names(alice, id=project_vm.id) == set()
    assert names(alice, id=project_vm.id,
                 projectid=cloud.team.id) == {project_vm.name}
    assert names(alice, projectid=-1) == {project_vm.name}


def test_root_admin_stops_and_starts_a_project_vm(client, project_vm):
    assert client.stop_vm(project_vm.id)["state"] == "Stopped"
    started = client.start_vm(project_vm.id)
    assert started["state"] == "Running"
    assert started["projectid"] == project_vm.account.project.id


def test_sub_domain_account_vm(client, cloud, domain_vm):
    (vm,) = listed(client, "listVirtualMachines", "virtualmachine",
                   id=domain_vm.id)
    assert vm["account"] == "alice" and "projectid" not in vm
    assert (vm["domainid"], vm["domain"], vm["domainpath"]) == (
        cloud.leaf.id, "leaf", "ROOT/sub-%s/leaf" % RUN_ID)
    assert vm["details"] == {} and vm["tags"] == []
    assert vm["securitygroup"] == [] and "keypairs" not in vm
    domains = {d["id"]: d for d in listed(client, "listDomains", "domain",
                                          listall=True)}
    assert domains[cloud.leaf.id]["path"] == "ROOT/sub-%s/leaf" % RUN_ID
    assert domains[cloud.leaf.id]["parentdomainid"] == cloud.sub.id
    assert domains[cloud.leaf.id]["level"] == 2
    assert domains[cloud.root_domain.id]["path"] == "ROOT"
    assert "parentdomainid" not in domains[cloud.root_domain.id]


def test_tags_details_keypairs(client, cloud, project_vm):
    (vm,) = listed(client, "listVirtualMachines", "virtualmachine",
                   projectid=cloud.team.id)
    # Tags as user_vm_view gives them: the VM's own account (here the
    # project's) and domain.
    owner = {"account": cloud.team.account.name, "domainid": cloud.sub.id,
             "domain": cloud.sub.name, "resourcetype": "UserVm",
             "resourceid": project_vm.id}
    assert vm["tags"] == [{"key": "tier", "value": "web", **owner},
                          {"key": "owner", "value": "team", **owner}]
    # As UserVmManagerImpl records them on deploy: the key pairs' public
    # keys (one per line) and names beside the VM's own details.
    assert vm["details"] == {
        "rootDiskController": "virtio",
        "SSH.PublicKey": "%s\n%s\n" % (cloud.deploy.publickey,
                                       cloud.deploy.publickey),
        "SSH.KeyPairNames": "deploy,spare"}
    assert vm["keypairs"] == "deploy,spare"
    pairs = listed(client, "listSSHKeyPairs", "sshkeypair",
                   projectid=cloud.team.id)
    digest = hashlib.md5(KEY_BLOB).hexdigest()  # noqa: S324
    fingerprint = ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    assert {p["name"]: p for p in pairs}["deploy"] == {
        "id": cloud.deploy.id, "name": "deploy", "domainid": cloud.sub.id,
        "domain": cloud.sub.name, "projectid": cloud.team.id,
        "project": cloud.team.name, "fingerprint": fingerprint}
    # Without projectid the root admin's own, not the project's.
    assert [p["name"] for p in listed(
        client, "listSSHKeyPairs", "sshkeypair", listall=True)] == [
            "admins-own"]
    assert listed(client, "listSSHKeyPairs", "sshkeypair", name="spare",
                  projectid=-1)[0]["fingerprint"] == fingerprint


def test_user_data(client, project_vm):
    (vm,) = listed(client, "listVirtualMachines", "virtualmachine",
                   id=project_vm.id)
    assert "userdata" not in vm  # only with userdata=true (4.18+)
    encoded = base64.b64encode(b"#cloud-config\nruncmd: []\n").decode()
    (vm,) = listed(client, "listVirtualMachines", "virtualmachine",
                   id=project_vm.id, userdata=True)
    assert vm["userdata"] == encoded
    assert client.call("getVirtualMachineUserData",
                       virtualmachineid=project_vm.id) == {
        "virtualmachineuserdata": {"virtualmachineid": project_vm.id,
                                   "userdata": encoded}}


def test_security_groups(client, cloud, project_vm):
    (vm,) = listed(client, "listVirtualMachines", "virtualmachine",
                   id=project_vm.id)
    # UserVmJoinDaoImpl: the group without its rules, the VM's owner.
    assert vm["securitygroup"] == [{
        "id": cloud.web.id, "name": "web", "description": "web tier",
        "projectid": cloud.team.id, "project": cloud.team.name,
        "ingressrule": [], "egressrule": [], "tags": [],
        "virtualmachineids": []}]
    (group,) = listed(client, "listSecurityGroups", "securitygroup",
                      virtualmachineid=project_vm.id)
    ids = [r.pop("ruleid") for r in group["ingressrule"]
           + group["egressrule"]]
    assert len(set(ids)) == 4
    assert group["ingressrule"] == [
        {"protocol": "tcp", "startport": 443, "endport": 443,
         "cidr": "10.0.0.0/8", "tags": []},
        {"protocol": "icmp", "icmptype": 8, "icmpcode": 0,
         "cidr": "0.0.0.0/0", "tags": []},
        {"protocol": "tcp", "startport": 80, "endport": 80,
         "securitygroupname": "lb", "account": cloud.team.account.name,
         "tags": []}]
    assert group["egressrule"] == [{"protocol": "all", "cidr": "0.0.0.0/0",
                                    "tags": []}]
    assert (group["virtualmachinecount"], group["virtualmachineids"]) == (
        1, [project_vm.id])
    assert (group["projectid"], group["domainpath"]) == (
        cloud.team.id, "ROOT/sub-%s" % RUN_ID)
    assert "account" not in group
    assert listed(client, "listSecurityGroups", "securitygroup",
                  listall=True) == []
    (lb,) = listed(client, "listSecurityGroups", "securitygroup",
                   projectid=cloud.team.id, securitygroupname="lb")
    assert lb["id"] == cloud.lb.id and lb["virtualmachineids"] == []


def test_projects(client, cloud, project_vm):
    # Not a member: without listall the root admin sees no project.
    assert listed(client, "listProjects", "project") == []
    (project,) = listed(client, "listProjects", "project", listall=True,
                        id=cloud.team.id)
    assert project["projectaccountname"] == "PrjAcct-%s-%d" % (
        cloud.team.name, cloud.leaf.internal_id)
    assert project["owner"] == [{"account": "alice"}]
    assert (project["domainid"], project["domainpath"]) == (
        cloud.sub.id, "ROOT/sub-%s" % RUN_ID)
    assert project["state"] == "Active"
