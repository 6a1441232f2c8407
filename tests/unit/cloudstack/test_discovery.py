"""describe_vm and validate_vm on canned CloudStack answers."""

import copy
import json

import pytest

from cs2os_agent.cloudstack import client as cs_client
from cs2os_agent.cloudstack import discovery
from cs2os_agent.cloudstack import errors as cloudstack_errors
from tools.testbed import cloudstack_api
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


def test_data_disks_are_named():
    disks = [dict(ROOT, id="v-d1", name="DATA-1", type="DATADISK",
                  deviceid=1),
             dict(ROOT, id="v-d2", name="logs", type="DATADISK", deviceid=2)]
    (problem,) = _problems(volumes=[ROOT] + disks)
    assert "DATA-1 (v-d1), logs (v-d2)" in problem
    assert "detach them" in problem


@pytest.mark.parametrize("pool_type", ["SharedMountPoint", "Filesystem",
                                       "RBD", "CLVM"])
def test_root_volume_must_be_on_nfs(pool_type):
    (problem,) = _problems(pool=dict(POOL, type=pool_type))
    assert "is on %s primary storage nfs-primary" % pool_type in problem
    assert "NFS primary storage (type NetworkFilesystem)" in problem


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
