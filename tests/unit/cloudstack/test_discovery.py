"""describe_vm and validate_vm on canned CloudStack answers."""

import copy
import json
import uuid

import pytest

from cs2os_agent.cloudstack import client as cs_client
from cs2os_agent.cloudstack import discovery
from cs2os_agent.cloudstack import errors as cloudstack_errors
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_owners
from tools.testbed import wsgi_session

POOL_ID = "6f3c1ebd-5d41-3c3c-b5d4-3bd7cc2b2c61"
VM_ID = "0b8c4a5e-5a8f-4f3e-9b0e-2a7c6a1d9f10"

# Shapes as a root admin gets them from CloudStack 4.x (UserVmResponse,
# VolumeResponse, StoragePoolResponse, ...), trimmed.
VM = {
    "id": VM_ID, "name": "web-1", "displayname": "Web 1",
    "account": "alice", "domain": "ROOT", "state": "Running",
    "zoneid": "z-1", "zonename": "zone-1",
    "hostid": "h-1", "hostname": "kvm-1",
    "templateid": "t-1", "templatename": "Ubuntu 22.04",
    "serviceofferingid": "o-1", "serviceofferingname": "Small",
    "cpunumber": 2, "cpuspeed": 1000, "memory": 2048,
    "hypervisor": "KVM", "instancename": "i-2-10-VM",
    "nic": [
        {"id": "n-2", "networkid": "net-2", "networkname": "backend",
         "macaddress": "1e:00:00:00:00:02", "ipaddress": "10.2.0.5",
         "isdefault": False, "deviceid": "1", "traffictype": "Guest",
         "type": "Isolated"},
        {"id": "n-1", "networkid": "net-1", "networkname": "front",
         "macaddress": "1e:00:00:00:00:01", "ipaddress": "10.1.0.5",
         "isdefault": True, "deviceid": "0", "traffictype": "Guest",
         "type": "Shared"},
    ],
}
ROOT = {"id": "v-root", "name": "ROOT-10", "type": "ROOT",
        "path": "5b0f1e0c-0000-4000-8000-00000000aaaa", "size": 8 << 30,
        "provisioningtype": "thin", "storageid": POOL_ID, "state": "Ready",
        "deviceid": 0, "storage": "nfs-primary"}
POOL = {"id": POOL_ID, "name": "nfs-primary", "type": "NetworkFilesystem",
        "path": "/export/primary", "ipaddress": "192.0.2.5",
        "scope": "CLUSTER", "state": "Up"}


class CannedClient:
    def __init__(self, vm=VM, volumes=(ROOT,), pool=POOL, host_error=None):
        self.vm = copy.deepcopy(vm)
        self.volumes = copy.deepcopy(list(volumes))
        self.pool = dict(pool)
        self.host_error = host_error

    def find_vm(self, ref):
        if ref not in (self.vm["id"], self.vm["name"]):
            raise cloudstack_errors.CloudStackVMNotFound(ref=ref)
        return self.vm

    def list_volumes(self, vm_id, project_id=None):
        self.volumes_project = project_id
        return self.volumes

    def get_storage_pool(self, pool_id):
        assert pool_id == self.pool["id"]
        return self.pool

    def get_template(self, template_id):
        return {"id": template_id, "name": "Ubuntu 22.04", "format": "QCOW2",
                "size": 8 << 30, "hypervisor": "KVM", "ostypeid": "x"}

    def get_service_offering(self, offering_id):
        return {"id": offering_id, "name": "Small", "cpunumber": 2,
                "cpuspeed": 1000, "memory": 2048, "iscustomized": False}

    def get_host(self, host_id):
        if self.host_error:
            raise self.host_error
        return {"id": host_id, "name": "kvm-1", "ipaddress": "192.0.2.21"}


def test_describe_vm():
    desc = discovery.describe_vm(CannedClient(), "web-1")
    assert json.loads(json.dumps(desc)) == desc  # DB and RPC safe
    assert desc["id"] == VM_ID and desc["instancename"] == "i-2-10-VM"
    assert (desc["cpunumber"], desc["memory"]) == (2, 2048)
    assert desc["host"] == {"id": "h-1", "name": "kvm-1",
                            "ipaddress": "192.0.2.21"}
    assert desc["serviceoffering"]["name"] == "Small"
    assert desc["template"] == {"id": "t-1", "name": "Ubuntu 22.04",
                                "format": "QCOW2", "size": 8 << 30,
                                "hypervisor": "KVM"}
    assert [n["networkname"] for n in desc["nics"]] == ["front", "backend"]
    assert desc["nics"][0]["isdefault"] is True
    root = desc["root_volume"]
    assert root["path"] == ROOT["path"] and root["storage"] == POOL
    assert desc["datadisks"] == []
    # The file name is the volume's path, not its id.
    assert desc["overlay_path"] == "/mnt/%s/%s" % (POOL_ID, ROOT["path"])
    assert discovery.validate_vm(desc) == []


def test_host_address_is_optional():
    denied = cloudstack_errors.CloudStackAuthFailed(
        command="listHosts", errorcode=401, errortext="not for you")
    desc = discovery.describe_vm(CannedClient(host_error=denied), "web-1")
    assert desc["host"] == {"id": "h-1", "name": "kvm-1", "ipaddress": None}


def test_stopped_vm_has_no_host():
    vm = dict(VM, state="Stopped")
    del vm["hostid"], vm["hostname"]
    desc = discovery.describe_vm(CannedClient(vm=vm), VM_ID)
    assert desc["host"] == {"id": None, "name": None, "ipaddress": None}
    assert discovery.validate_vm(desc) == []


def test_unknown_vm_propagates():
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        discovery.describe_vm(CannedClient(), "other")


def test_overlay_path_by_pool_type():
    assert discovery.overlay_path(POOL, "f") == "/mnt/%s/f" % POOL_ID
    shared = dict(POOL, type="SharedMountPoint", path="/srv/primary")
    assert discovery.overlay_path(shared, "f") == "/srv/primary/f"
    local = dict(POOL, type="Filesystem", path="/var/lib/libvirt/images")
    assert discovery.overlay_path(local, "f") == "/var/lib/libvirt/images/f"
    assert discovery.overlay_path(dict(POOL, type="RBD"), "f") is None
    assert discovery.overlay_path(POOL, None) is None


def _problems(vm=VM, volumes=(ROOT,), pool=POOL):
    return discovery.validate_vm(
        discovery.describe_vm(CannedClient(vm, volumes, pool), VM_ID))


def test_not_kvm():
    (problem,) = _problems(vm=dict(VM, hypervisor="VMware"))
    assert "runs on VMware; cs2os moves KVM VMs only" in problem


@pytest.mark.parametrize("state", ["Starting", "Migrating", "Destroyed",
                                   "Error"])
def test_state_must_be_running_or_stopped(state):
    (problem,) = _problems(vm=dict(VM, state=state))
    assert "is %s; it must be Running or Stopped" % state in problem


def test_data_disks_in_device_order_with_their_files():
    disks = [dict(ROOT, id="v-d2", name="logs", type="DATADISK", deviceid=2,
                  path="f-logs"),
             dict(ROOT, id="v-d1", name="DATA-1", type="DATADISK",
                  deviceid=1, path="f-data")]
    desc = discovery.describe_vm(CannedClient(VM, [ROOT] + disks, POOL),
                                 VM_ID)
    assert discovery.validate_vm(desc) == []
    assert [d["name"] for d in desc["datadisks"]] == ["DATA-1", "logs"]
    assert [d["file"] for d in desc["datadisks"]] == [
        "/mnt/%s/f-data" % POOL["id"], "/mnt/%s/f-logs" % POOL["id"]]
    assert desc["datadisks"][0]["storage"]["id"] == POOL["id"]


def test_a_data_disk_is_checked_as_the_root_is():
    disk = dict(ROOT, id="v-d1", name="logs", type="DATADISK", deviceid=1,
                state="Allocated")
    (problem,) = _problems(volumes=[ROOT, disk])
    assert "data disk logs (v-d1) of VM" in problem
    assert "is Allocated, not Ready" in problem


@pytest.mark.parametrize("pool_type", ["SharedMountPoint", "Filesystem",
                                       "CLVM"])
def test_root_volume_must_be_on_nfs_or_rbd(pool_type):
    (problem,) = _problems(pool=dict(POOL, type=pool_type))
    assert "is on %s primary storage nfs-primary" % pool_type in problem
    assert ("NFS primary storage (type NetworkFilesystem) or Ceph RBD "
            "primary storage (type RBD)") in problem


def test_a_root_volume_on_rbd_is_accepted():
    assert _problems(pool=dict(POOL, type="RBD")) == []


def test_non_admin_key_is_explained():
    vm = dict(VM)
    del vm["instancename"]
    root = dict(ROOT)
    del root["path"], root["storageid"]
    (problem,) = _problems(vm=vm, volumes=[root])
    assert "must belong to a root admin" in problem


def test_no_root_volume_and_volume_not_ready():
    assert "has no ROOT volume" in _problems(volumes=[])[0]
    (problem,) = _problems(volumes=[dict(ROOT, state="Migrating")])
    assert "is Migrating, not Ready" in problem


def test_several_problems_at_once():
    problems = _problems(vm=dict(VM, hypervisor="XenServer",
                                 state="Error"))
    assert len(problems) == 2


def test_describe_through_the_stand_in():
    cloud = cloudstack_api.FakeCloudStack()
    admin = cloud.add_account("admin")
    zone = cloud.add_zone("zone-1")
    host = cloud.add_host(zone, "kvm-1", "192.0.2.30")
    pool = cloud.add_storage_pool(zone, "nfs-1")
    template = cloud.add_template(zone, "tiny", 1 << 26, admin)
    offering = cloud.add_service_offering("small", 1, 500, 128)
    vm = cloud.add_vm("web-1", admin, host, template, offering, pool,
                      "volume-file", 1 << 26,
                      [cloud.add_network(zone, "a"),
                       cloud.add_network(zone, "b")])
    cloud.kvm.running.add(vm.instancename)
    client = cs_client.CloudStackClient(
        wsgi_session.BASE_URL + "/client/api", admin.apikey,
        admin.secretkey, session=wsgi_session.session_for(cloud))
    desc = discovery.describe_vm(client, "web-1")
    assert desc["state"] == "Running"
    assert desc["host"]["ipaddress"] == "192.0.2.30"
    assert desc["overlay_path"] == "/mnt/%s/volume-file" % pool.id
    assert desc["template"]["id"] == template.id
    assert desc["serviceoffering"]["memory"] == 128
    assert [n["networkname"] for n in desc["nics"]] == ["a", "b"]
    assert discovery.validate_vm(desc) == []


# -- security groups ---------------------------------------------------------


def _cs_rule(protocol, **fields):
    # SecurityGroupRuleResponse as SecurityGroupJoinDaoImpl fills it.
    return dict({"ruleid": "r-%s" % protocol, "protocol": protocol}, **fields)


WEB = {"id": "sg-web", "name": "web", "description": "Web servers",
       "account": "alice", "domainid": "d-root", "domain": "ROOT",
       "ingressrule": [
           _cs_rule("tcp", startport=22, endport=22, cidr="0.0.0.0/0"),
           _cs_rule("icmp", icmptype=-1, icmpcode=-1, cidr="0.0.0.0/0"),
           _cs_rule("icmp", icmptype=8, icmpcode=0, cidr="10.1.2.3/24"),
           _cs_rule("udp", startport=0, endport=65535, cidr="10.0.0.0/8"),
           _cs_rule("ALL", cidr="2001:db8::/32"),
           _cs_rule("tcp", startport=8080, endport=8090,
                    securitygroupname="web", account="alice")],
       "egressrule": []}
DB = {"id": "sg-db", "name": "db", "description": "", "account": "bob",
      "domainid": "d-root", "domain": "ROOT", "ingressrule": [],
      "egressrule": [_cs_rule("tcp", startport=5432, endport=5432,
                              securitygroupname="web", account="alice")]}


class GroupsClient(CannedClient):
    def __init__(self, groups, elsewhere=()):
        super().__init__(vm=dict(VM, securitygroup=[
            {"id": g["id"], "name": g["name"], "ingressrule": [],
             "egressrule": []} for g in groups]))
        self.groups, self.elsewhere = groups, list(elsewhere)

    def list_security_groups(self, ids, project_id=None):
        return [next(g for g in self.groups if g["id"] == i) for i in ids]

    def find_security_groups(self, name):
        return [g for g in self.elsewhere if g["name"] == name]


def test_security_groups_and_their_rules_normalised():
    desc = discovery.describe_vm(GroupsClient([WEB]), VM_ID)
    assert json.loads(json.dumps(desc)) == desc
    (web,) = desc["securitygroups"]
    assert (web["id"], web["name"], web["egress"]) == ("sg-web", "web", [])
    any_port = {"startport": None, "endport": None, "icmptype": None,
                "icmpcode": None, "group": None, "group_account": None,
                "group_id": None}
    assert web["ingress"] == [
        dict(any_port, protocol="tcp", startport=22, endport=22,
             cidr="0.0.0.0/0"),
        # -1: any type, any code.
        dict(any_port, protocol="icmp", cidr="0.0.0.0/0"),
        dict(any_port, protocol="icmp", icmptype=8, icmpcode=0,
             cidr="10.1.2.0/24"),
        dict(any_port, protocol="udp", cidr="10.0.0.0/8"),
        dict(any_port, protocol="all", cidr="2001:db8::/32"),
        dict(any_port, protocol="tcp", startport=8080, endport=8090,
             cidr=None, group="web", group_account="alice",
             group_id="sg-web")]
    assert desc["referenced_securitygroups"] == []
    assert discovery.validate_vm(desc) == []


def test_a_vm_without_security_groups():
    desc = discovery.describe_vm(CannedClient(), VM_ID)
    assert (desc["securitygroups"], desc["referenced_securitygroups"]) == (
        [], [])


def test_a_group_a_rule_allows_is_looked_up_by_name_and_account():
    other_web = dict(WEB, id="sg-web-carol", account="carol")
    other_domain = dict(WEB, id="sg-web-sub", domainid="d-sub")
    desc = discovery.describe_vm(
        GroupsClient([DB], elsewhere=[other_web, other_domain, WEB]), VM_ID)
    (db,) = desc["securitygroups"]
    assert db["egress"][0]["group_id"] == "sg-web"
    (web,) = desc["referenced_securitygroups"]
    assert web["id"] == "sg-web"
    assert web["ingress"][-1]["group_id"] == "sg-web"


def test_a_rule_allowing_a_project_group_names_the_projects_account():
    erp = dict(WEB, id="sg-erp", account=None, projectid="p-erp",
               project="erp-1", ingressrule=[], egressrule=[])
    db = dict(DB, egressrule=[_cs_rule(
        "all", securitygroupname="web", account="PrjAcct-erp-1-1")])
    desc = discovery.describe_vm(GroupsClient([db], elsewhere=[erp]), VM_ID)
    assert desc["securitygroups"][0]["egress"][0]["group_id"] == "sg-erp"


def test_a_rule_allowing_a_group_cloudstack_does_not_list_is_a_problem():
    desc = discovery.describe_vm(GroupsClient([DB]), VM_ID)
    (problem,) = discovery.validate_vm(desc)
    assert problem == ("a rule of security group db (sg-db) allows group "
                       "web of account alice, which CloudStack does not list")


def test_security_groups_through_the_stand_in():
    cloud = cloudstack_api.FakeCloudStack()
    admin = cloud.add_account("admin")
    alice = cloud.add_account("alice", admin=False)
    zone = cloud.add_zone("zone-1")
    host = cloud.add_host(zone, "kvm-1", "192.0.2.30")
    pool = cloud.add_storage_pool(zone, "nfs-1")
    template = cloud.add_template(zone, "tiny", 1 << 26, admin)
    offering = cloud.add_service_offering("small", 1, 500, 128)
    erp = cloud.add_project("erp")
    web = cloud.add_security_group(alice, "web", ingress=[
        {"protocol": "tcp", "startport": 22, "endport": 22},
        {"protocol": "icmp", "icmptype": -1, "icmpcode": -1}])
    db = cloud.add_security_group(alice, "db", ingress=[
        {"protocol": "tcp", "startport": 5432, "endport": 5432,
         "securitygroup": web}])
    app = cloud.add_security_group(erp, "app", egress=[
        {"protocol": "tcp", "startport": 443, "endport": 443,
         "cidr": "203.0.113.0/24"}])
    app.ingress.append(cloudstack_owners._rule(
        {"protocol": "all", "securitygroup": app}))
    client = cs_client.CloudStackClient(
        wsgi_session.BASE_URL + "/client/api", admin.apikey,
        admin.secretkey, session=wsgi_session.session_for(cloud))
    network = cloud.add_network(zone, "a")
    cloud.add_vm("db-1", alice, host, template, offering, pool, "f1",
                      1 << 26, [network], securitygroups=[db])
    desc = discovery.describe_vm(client, "db-1")
    assert [g["name"] for g in desc["securitygroups"]] == ["db"]
    # db allows web, which db-1 is not in: looked up, rules and all.
    (listed_web,) = desc["referenced_securitygroups"]
    assert (listed_web["id"], len(listed_web["ingress"])) == (web.id, 2)
    assert desc["securitygroups"][0]["ingress"][0]["group_id"] == web.id
    assert discovery.validate_vm(desc) == []
    # A CloudStack project's VM: its groups are listed in its project.
    cloud.add_vm("erp-1", alice, host, template, offering, pool, "f2",
                  1 << 26, [network], project=erp, securitygroups=[app])
    desc = discovery.describe_vm(client, "erp-1")
    (listed_app,) = desc["securitygroups"]
    assert listed_app["egress"][0]["cidr"] == "203.0.113.0/24"
    assert listed_app["ingress"][0]["group_id"] == app.id
    calls = [c[2] for c in cloud.calls if c[1] == "listSecurityGroups"]
    assert calls[-1]["projectid"] == erp.id and calls[-1]["id"] == app.id
    assert all(c["listall"] == "true" for c in calls)
    assert client.list_security_groups([web.id, db.id]) == [
        client.find_security_groups("web")[0],
        client.find_security_groups("db")[0]]
    assert client.find_security_groups("app")[0]["projectid"] == erp.id
    with pytest.raises(cloudstack_errors.CloudStackObjectNotFound):
        client.list_security_groups([str(uuid.uuid4())])
