"""The CloudStack stand-in's objects and how the API renders them.

Field names are those of CloudStack's response classes (UserVmResponse,
NicResponse, VolumeResponse, StoragePoolResponse, TemplateResponse,
ServiceOfferingResponse, HostResponse, AsyncJobResponse, ResourceTagResponse,
SecurityGroupResponse).  As CloudStack's JSON serializer does, a field
without a value is left out.  Root admins get the "Full" view; other callers
do not see instance names, hosts, volume paths or storage pool ids
(UserVmJoinDaoImpl, VolumeJoinDaoImpl).

Owners as ApiResponseHelper.populateOwner (ApiResponseOwnerServiceImpl in
4.20+) fills them: a CloudStack project owns its resources through its own
project account ("PrjAcct-<name>-<domain id>"); its resources show
``projectid`` and ``project`` instead of ``account``.  ``domainpath`` (since
4.19.2.0) is getPrettyDomainPath: "ROOT", "ROOT/sub".  Domains, projects, key
pairs and security groups are in cloudstack_owners.
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
    admin: bool  # a root admin; False: a normal user
    apikey: str
    secretkey: str
    internal_id: int
    id: str = dataclasses.field(default_factory=new_id)
    user_id: str = dataclasses.field(default_factory=new_id)
    domain: "object" = None  # cloudstack_owners.Domain
    project: "object" = None  # the Project whose own account this is

    @property
    def domain_id(self):
        return self.domain.id


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
    user: Account = None  # who deployed it (userid); None: its account
    tags: dict = dataclasses.field(default_factory=dict)
    details: dict = dataclasses.field(default_factory=dict)
    keypairs: list = dataclasses.field(default_factory=list)
    userdata: str = None  # base64, as CloudStack stores it
    securitygroups: list = dataclasses.field(default_factory=list)
    haenable: bool = False  # updateVirtualMachine haenable=


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


# user.vm.denied.details and user.vm.readonly.details, their defaults
# (QueryService): what UserVmJoinDaoImpl hides from, and marks read-only
# for, callers that are not root admins.
DENIED_DETAILS = ("rootdisksize", "cpuOvercommitRatio",
                  "memoryOvercommitRatio",
                  "Message.ReservedCapacityFreed.Flag")
READONLY_DETAILS = "dataDiskController, rootDiskController"


def owner_fields(account, path=True):
    """populateOwner: ``account``, or a project's ``projectid`` and
    ``project``; then ``domainid``, ``domain`` and (``path``) the pretty
    ``domainpath``."""
    project = account.project
    return {
        "account": None if project else account.name,
        "projectid": project.id if project else None,
        "project": project.name if project else None,
        "domainid": account.domain.id,
        "domain": account.domain.name,
        "domainpath": account.domain.pretty_path if path else None,
    }


def render_vm(vm, state, admin, userdata=False):
    """UserVmResponse; ``userdata``: listVirtualMachines userdata=true."""
    full = admin
    # CloudStack keeps host_id while the VM is on a host; the stand-in's
    # state comes from libvirt, so a running domain means its last host.
    host = vm.host or vm.last_host
    running = state in ("Starting", "Running", "Stopping")
    owner, user = owner_fields(vm.account), vm.user or vm.account
    details = {k: v for k, v in vm.details.items()
               if admin or k not in DENIED_DETAILS}
    return _clean({
        "id": vm.id,
        "name": vm.name,
        "displayname": vm.displayname or vm.name,
        "account": owner.pop("account"),
        "userid": user.user_id,
        "username": user.name,
        **owner,
        "created": vm.created,
        "state": state,
        "haenable": vm.haenable,
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
        "securitygroup": [_vm_group(g, vm.account)
                          for g in vm.securitygroups],
        "nic": [render_nic(nic) for nic in vm.nics],
        "hypervisor": vm.hypervisor,
        "instancename": vm.instancename if full else None,
        "details": details,
        "readonlydetails": None if admin else READONLY_DETAILS,
        # SSH.KeyPairNames: the names joined with "," (UserVmManagerImpl)
        "keypairs": ",".join(k.name for k in vm.keypairs) or None,
        "affinitygroup": [],
        "displayvm": True if admin else None,
        "isdynamicallyscalable": False,
        "tags": [_vm_tag(vm, key, value) for key, value in vm.tags.items()],
        "userdata": vm.userdata if userdata else None,
    })


def _vm_tag(vm, key, value):
    # GenericDaoBaseWithTagInformation.addTagInformation: the owner comes
    # from user_vm_view (tag_account_name is the VM's account, a project's
    # own account for a project VM), without an account type, so
    # populateOwner always sets "account"; no domainpath.
    return {"key": key, "value": value, "resourcetype": "UserVm",
            "resourceid": vm.id, "account": vm.account.name,
            "domainid": vm.account.domain.id,
            "domain": vm.account.domain.name}


def _vm_group(group, account):
    # UserVmJoinDaoImpl: id, name, description and the VM's owner; the
    # empty sets SecurityGroupResponse() makes are serialized as [].
    project = account.project
    return _clean({
        "id": group.id, "name": group.name,
        "description": group.description,
        "account": None if project else account.name,
        "projectid": project.id if project else None,
        "project": project.name if project else None,
        "ingressrule": [], "egressrule": [], "tags": [],
        "virtualmachineids": [],
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
        **owner_fields(vm.account),
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
    return _clean({
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
        "zoneid": template.zone.id,
        "zonename": template.zone.name,
        "status": "Download Complete",
        "size": template.size,
        "templatetype": "USER",
        "hypervisor": template.hypervisor,
        **owner_fields(template.owner, path=False),
        "isextractable": False,
        "tags": [],
    })


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
