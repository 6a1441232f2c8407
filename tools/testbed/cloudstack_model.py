"""The CloudStack stand-in's objects and how the API renders them.

Field names are those of CloudStack's response classes (UserVmResponse,
NicResponse, VolumeResponse, StoragePoolResponse, TemplateResponse,
ServiceOfferingResponse, HostResponse, AsyncJobResponse).  As CloudStack's
JSON serializer does, a field without a value is left out.  Root admins get
the "Full" view; other callers do not see instance names, hosts, volume
paths or storage pool ids (UserVmJoinDaoImpl, VolumeJoinDaoImpl).
"""

import dataclasses
import datetime
import uuid


def new_id():
    return str(uuid.uuid4())


def timestamp(when=None):
    """CloudStack's date format: 2024-05-01T10:00:00+0000."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S%z")


def _clean(entry):
    return {k: v for k, v in entry.items() if v is not None}


@dataclasses.dataclass(eq=False)
class Account:
    name: str
    admin: bool
    apikey: str
    secretkey: str
    internal_id: int
    id: str = dataclasses.field(default_factory=new_id)
    user_id: str = dataclasses.field(default_factory=new_id)
    domain_id: str = dataclasses.field(default_factory=new_id)


@dataclasses.dataclass(eq=False)
class Zone:
    name: str
    id: str = dataclasses.field(default_factory=new_id)


@dataclasses.dataclass(eq=False)
class Host:
    name: str
    ipaddress: str
    zone: Zone
    id: str = dataclasses.field(default_factory=new_id)
    cluster_id: str = dataclasses.field(default_factory=new_id)


@dataclasses.dataclass(eq=False)
class Pool:
    name: str
    type: str  # StoragePoolType: NetworkFilesystem, SharedMountPoint...
    path: str  # the NFS export, or the directory on the hosts
    ipaddress: str
    zone: Zone
    id: str = dataclasses.field(default_factory=new_id)
    scope: str = "CLUSTER"


@dataclasses.dataclass(eq=False)
class Template:
    name: str
    size: int
    zone: Zone
    owner: Account
    id: str = dataclasses.field(default_factory=new_id)
    format: str = "QCOW2"
    hypervisor: str = "KVM"
    ispublic: bool = True


@dataclasses.dataclass(eq=False)
class Offering:
    name: str
    cpunumber: int
    cpuspeed: int
    memory: int  # MiB
    id: str = dataclasses.field(default_factory=new_id)


@dataclasses.dataclass(eq=False)
class Network:
    name: str
    zone: Zone
    id: str = dataclasses.field(default_factory=new_id)
    gateway: str = "10.1.1.1"
    netmask: str = "255.255.255.0"
    type: str = "Isolated"


@dataclasses.dataclass(eq=False)
class Nic:
    network: Network
    ipaddress: str
    macaddress: str
    deviceid: int
    isdefault: bool
    id: str = dataclasses.field(default_factory=new_id)


@dataclasses.dataclass(eq=False)
class Volume:
    name: str
    type: str  # ROOT or DATADISK
    pool: Pool
    path: str  # the file name on the pool
    size: int
    vm: "Vm"
    deviceid: int
    id: str = dataclasses.field(default_factory=new_id)
    state: str = "Ready"
    provisioningtype: str = "thin"
    removed: bool = False


@dataclasses.dataclass(eq=False)
class Vm:
    name: str
    internal_id: int
    instancename: str  # i-<account id>-<vm id>-<instance.name>
    account: Account
    zone: Zone
    template: Template
    offering: Offering
    hypervisor: str
    last_host: Host
    id: str = dataclasses.field(default_factory=new_id)
    displayname: str = None
    nics: list = dataclasses.field(default_factory=list)
    host: Host = None  # set while the VM runs on it
    transition: str = None  # Starting, Stopping, Destroyed, Expunging
    removed: bool = False
    unmanaged: bool = False  # unmanageVirtualMachine: CloudStack forgot it
    created: str = dataclasses.field(default_factory=timestamp)


@dataclasses.dataclass(eq=False)
class Job:
    cmd: str  # the Java class, as CloudStack reports it
    vm: Vm
    account: Account
    id: str = dataclasses.field(default_factory=new_id)
    status: int = 0  # 0 pending, 1 succeeded, 2 failed
    resultcode: int = 0
    result: dict = None
    created: str = dataclasses.field(default_factory=timestamp)
    completed: str = None


def render_vm(vm, state, admin):
    full = admin
    # CloudStack keeps host_id while the VM is on a host; the stand-in's
    # state comes from libvirt, so a running domain means its last host.
    host = vm.host or vm.last_host
    running = state in ("Starting", "Running", "Stopping")
    return _clean({
        "id": vm.id,
        "name": vm.name,
        "displayname": vm.displayname or vm.name,
        "account": vm.account.name,
        "userid": vm.account.user_id,
        "username": vm.account.name,
        "domainid": vm.account.domain_id,
        "domain": "ROOT",
        "created": vm.created,
        "state": state,
        "haenable": False,
        "zoneid": vm.zone.id,
        "zonename": vm.zone.name,
        "hostid": host.id if full and running else None,
        "hostname": host.name if full and running else None,
        "templateid": vm.template.id,
        "templatename": vm.template.name,
        "templatedisplaytext": vm.template.name,
        "passwordenabled": False,
        "serviceofferingid": vm.offering.id,
        "serviceofferingname": vm.offering.name,
        "cpunumber": vm.offering.cpunumber,
        "cpuspeed": vm.offering.cpuspeed,
        "memory": vm.offering.memory,
        "guestosid": "b0e6b2a4-0000-0000-0000-000000000001",
        "rootdeviceid": 0,
        "rootdevicetype": "ROOT",
        "securitygroup": [],
        "nic": [render_nic(nic) for nic in vm.nics],
        "hypervisor": vm.hypervisor,
        "instancename": vm.instancename if full else None,
        "details": {},
        "affinitygroup": [],
        "displayvm": True if admin else None,
        "isdynamicallyscalable": False,
        "tags": [],
    })


def render_nic(nic):
    return {
        "id": nic.id,
        "networkid": nic.network.id,
        "networkname": nic.network.name,
        "netmask": nic.network.netmask,
        "gateway": nic.network.gateway,
        "ipaddress": nic.ipaddress,
        "isolationuri": "vlan://100",
        "broadcasturi": "vlan://100",
        "traffictype": "Guest",
        "type": nic.network.type,
        "isdefault": nic.isdefault,
        "macaddress": nic.macaddress,
        "deviceid": str(nic.deviceid),  # a String in NicResponse
        "extradhcpoption": [],
    }


def render_volume(volume, vm_state, admin):
    vm = volume.vm
    return _clean({
        "id": volume.id,
        "name": volume.name,
        "zoneid": volume.pool.zone.id,
        "zonename": volume.pool.zone.name,
        "type": volume.type,
        "deviceid": volume.deviceid,
        "virtualmachineid": vm.id,
        "vmname": vm.name,
        "vmdisplayname": vm.displayname or vm.name,
        "vmstate": vm_state,
        "vmtype": "User",
        "provisioningtype": volume.provisioningtype,
        "size": volume.size,
        "created": vm.created,
        "state": volume.state,
        "account": vm.account.name,
        "domainid": vm.account.domain_id,
        "domain": "ROOT",
        "storagetype": "shared",
        "hypervisor": "KVM",
        "storage": volume.pool.name if admin else None,
        "storageid": volume.pool.id if admin else None,
        "path": volume.path if admin else None,
        "templateid": vm.template.id if volume.type == "ROOT" else None,
        "templatename": vm.template.name if volume.type == "ROOT" else None,
        "serviceofferingid": vm.offering.id,
        "serviceofferingname": vm.offering.name,
        "destroyed": False,
        "isextractable": False,
        "displayvolume": True if admin else None,
        "tags": [],
    })


def render_pool(pool):
    return {
        "id": pool.id,
        "zoneid": pool.zone.id,
        "zonename": pool.zone.name,
        "name": pool.name,
        "ipaddress": pool.ipaddress,
        "path": pool.path,
        "created": timestamp(),
        "type": pool.type,
        "clusterid": new_id(),
        "state": "Up",
        "scope": pool.scope,
        "hypervisor": "KVM",
        "provider": "DefaultPrimary",
        "disksizetotal": 1 << 40,
        "disksizeallocated": 0,
        "overprovisionfactor": "2.0",
        "tags": "",
    }


def render_template(template):
    return {
        "id": template.id,
        "name": template.name,
        "displaytext": template.name,
        "ispublic": template.ispublic,
        "created": timestamp(),
        "isready": True,
        "passwordenabled": False,
        "format": template.format,
        "isfeatured": False,
        "crossZones": False,
        "ostypeid": "b0e6b2a4-0000-0000-0000-000000000001",
        "ostypename": "Other Linux (64-bit)",
        "account": template.owner.name,
        "zoneid": template.zone.id,
        "zonename": template.zone.name,
        "status": "Download Complete",
        "size": template.size,
        "templatetype": "USER",
        "hypervisor": template.hypervisor,
        "domain": "ROOT",
        "domainid": template.owner.domain_id,
        "isextractable": False,
        "tags": [],
    }


def render_offering(offering):
    return {
        "id": offering.id,
        "name": offering.name,
        "displaytext": offering.name,
        "cpunumber": offering.cpunumber,
        "cpuspeed": offering.cpuspeed,
        "memory": offering.memory,
        "created": timestamp(),
        "storagetype": "shared",
        "provisioningtype": "thin",
        "offerha": False,
        "limitcpuuse": False,
        "isvolatile": False,
        "issystem": False,
        "defaultuse": False,
        "iscustomized": False,
    }


def render_host(host):
    return {
        "id": host.id,
        "name": host.name,
        "state": "Up",
        "type": "Routing",
        "ipaddress": host.ipaddress,
        "zoneid": host.zone.id,
        "zonename": host.zone.name,
        "clusterid": host.cluster_id,
        "clustertype": "CloudManaged",
        "hypervisor": "KVM",
        "resourcestate": "Enabled",
        "islocalstorageactive": False,
        "created": timestamp(),
    }


def render_job(job):
    entry = {
        "accountid": job.account.id,
        "userid": job.account.user_id,
        "cmd": job.cmd,
        "jobstatus": job.status,
        "jobprocstatus": 0,
        "jobresultcode": job.resultcode,
        "jobinstancetype": "VirtualMachine",
        "jobinstanceid": job.vm.id,
        "created": job.created,
        "jobid": job.id,
    }
    if job.status != 0:
        entry.update(jobresulttype="object", jobresult=job.result,
                     completed=job.completed)
    return entry
