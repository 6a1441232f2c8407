"""What cs2os needs to know about a CloudStack VM, as one plain dict.

The dict is stored in the database and sent over RPC, so it holds only
JSON types.  It says what CloudStack's API says; the real backing chain is
read from the files later (names and ids are not proof of what a qcow2
header points to).
"""

import functools
import ipaddress
import posixpath
import re

from oslo_log import log as logging

from cs2os_agent.cloudstack import errors

LOG = logging.getLogger(__name__)

# LibvirtStorageAdaptor mounts an NFS pool at /mnt/<pool uuid> on every KVM
# host (hard-coded there, not a setting).
KVM_MOUNT_PARENT = "/mnt"
NFS = "NetworkFilesystem"
RBD = "RBD"
_POOL_NAMES = {NFS: "NFS primary storage (type %s)" % NFS,
               RBD: "Ceph RBD primary storage (type %s)" % RBD}
# Directory pools: the KVM agent uses the pool's own path (a mount point
# the admin made, or local disk), not /mnt/<uuid>.
DIRECTORY_POOLS = ("SharedMountPoint", "Filesystem")
MOVABLE_STATES = ("Running", "Stopped")

_VM_KEYS = ("id", "name", "displayname", "instancename", "state",
            "hypervisor", "account", "domain", "domainid", "domainpath",
            "projectid", "project", "keypairs", "zoneid", "zonename",
            "cpunumber", "cpuspeed", "memory")
_NIC_KEYS = ("id", "networkid", "networkname", "macaddress", "ipaddress",
             "netmask", "gateway", "isdefault", "deviceid", "traffictype",
             "type")
_VOLUME_KEYS = ("id", "name", "type", "path", "size", "provisioningtype",
                "storageid", "state", "deviceid", "diskofferingid",
                "diskofferingname")
_POOL_KEYS = ("id", "name", "type", "path", "ipaddress", "scope", "state")
_TEMPLATE_KEYS = ("id", "name", "format", "size", "hypervisor")
_OFFERING_KEYS = ("id", "name", "cpunumber", "cpuspeed", "memory",
                  "iscustomized")


# VM details whose key holds one of these words are never recorded
# (CloudStack keeps the encrypted password there, and operators put
# credentials in details).
SECRET_WORDS = ("password", "passwd", "secret", "token", "private",
                "credential", "apikey", "api_key", "accesskey")


def is_secret(key):
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def public_details(details):
    """The VM's details without the secret ones."""
    return {str(k): str(v) for k, v in (details or {}).items()
            if not is_secret(str(k))}


def _tags(vm):
    return [{"key": t.get("key"), "value": t.get("value")}
            for t in vm.get("tags") or [] if t.get("key")]


# A CloudStack project's own account (ProjectManagerImpl.createProject):
# what a rule allowing a project's group names as its account.
_PROJECT_ACCOUNT = re.compile(r"^PrjAcct-(.*)-\d+$")


def _port(value):
    """A rule's port, ICMP type or code as an int; None for -1 (any)."""
    if value is None or int(value) == -1:
        return None
    return int(value)


def _cidr(cidr):
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        return cidr  # Neutron says what is wrong with it


def _sg_rule(rule):
    """A SecurityGroupRuleResponse, normalised: ``protocol`` tcp, udp,
    icmp, all or a protocol number; ``startport``/``endport`` (tcp, udp;
    None for every port), ``icmptype``/``icmpcode`` (None for -1, any);
    ``cidr``, or ``group`` and ``group_account`` (the group it allows,
    resolved to ``group_id`` by _security_groups)."""
    protocol = str(rule.get("protocol") or "all").lower()
    norm = {"protocol": protocol, "startport": None, "endport": None,
            "icmptype": None, "icmpcode": None, "cidr": None,
            "group": rule.get("securitygroupname"), "group_account": None,
            "group_id": None}
    if protocol == "icmp":
        norm["icmptype"] = _port(rule.get("icmptype"))
        norm["icmpcode"] = _port(rule.get("icmpcode"))
    elif protocol in ("tcp", "udp"):
        start, end = _port(rule.get("startport")), _port(rule.get("endport"))
        # 0-0 is how CloudStack before 4.x kept "every port".
        if not (start in (None, 0, 1) and end in (None, 0, 65535)):
            norm["startport"], norm["endport"] = start, end
    if norm["group"]:
        norm["group_account"] = rule.get("account")
    else:
        norm["cidr"] = _cidr(rule.get("cidr") or "0.0.0.0/0")
    return norm


def _sg(entry):
    return {"id": entry.get("id"), "name": entry.get("name"),
            "description": entry.get("description"),
            "ingress": [_sg_rule(r) for r in entry.get("ingressrule") or []],
            "egress": [_sg_rule(r) for r in entry.get("egressrule") or []]}


def _allows(entry, rule, candidate):
    """``candidate`` (a listSecurityGroups entry) is the group ``rule`` of
    group ``entry`` allows: same name, an account of the same domain
    (SecurityGroupManagerImpl.authorizeSecurityGroupRule)."""
    if (candidate.get("name") != rule["group"]
            or candidate.get("domainid") != entry.get("domainid")):
        return False
    if candidate.get("projectid"):
        match = _PROJECT_ACCOUNT.match(rule["group_account"] or "")
        return bool(match) and match.group(1) == candidate.get("project")
    return candidate.get("account") == rule["group_account"]


def _security_groups(client, vm):
    """(the VM's groups, the other groups their rules allow, and theirs)
    with every rule that allows a group resolved to its ``group_id``."""
    refs = vm.get("securitygroup") or []
    if not refs:
        return [], []
    listed = client.list_security_groups([g["id"] for g in refs],
                                         vm.get("projectid"))
    known = [(entry, _sg(entry)) for entry in listed]
    pending = list(known)
    while pending:
        entry, group = pending.pop(0)
        for rule in group["ingress"] + group["egress"]:
            if not rule["group"]:
                continue
            found = [g for e, g in known if _allows(entry, rule, e)]
            if not found:
                fresh = [e for e in client.find_security_groups(rule["group"])
                         if _allows(entry, rule, e)]
                if len(fresh) == 1:
                    known.append((fresh[0], _sg(fresh[0])))
                    pending.append(known[-1])
                    found = [known[-1][1]]
            if found:
                rule["group_id"] = found[0]["id"]
    groups = [g for _e, g in known]
    return groups[:len(listed)], groups[len(listed):]


def _pick(entry, keys):
    return {key: entry.get(key) for key in keys}


def overlay_path(pool, volume_path):
    """Where a KVM host sees the volume file: ``/mnt/<pool id>/<path>``.

    ``path`` (not the volume id) is the file name: it starts as the volume
    uuid but changes when the volume is migrated between pools.
    """
    if not pool or not volume_path:
        return None
    if pool.get("type") == NFS:
        return posixpath.join(KVM_MOUNT_PARENT, pool["id"], volume_path)
    if pool.get("type") in DIRECTORY_POOLS and pool.get("path"):
        return posixpath.join(pool["path"], volume_path)
    return None


def _device_order(nic_or_volume):
    try:
        return int(nic_or_volume.get("deviceid"))
    except (TypeError, ValueError):
        return 0


def _host(client, vm):
    host = {"id": vm.get("hostid"), "name": vm.get("hostname"),
            "ipaddress": None}
    if host["id"]:
        try:
            host["ipaddress"] = client.get_host(host["id"]).get("ipaddress")
        except (errors.CloudStackAuthFailed, errors.CloudStackAPIError,
                errors.CloudStackObjectNotFound) as exc:
            # listHosts is for root admins only; the name is still known.
            LOG.warning("No address for CloudStack host %s: %s",
                        host["id"], exc)
    return host


def _template(client, vm):
    template = {key: None for key in _TEMPLATE_KEYS}
    template.update(id=vm.get("templateid"), name=vm.get("templatename"))
    if template["id"]:
        try:
            template.update(_pick(client.get_template(template["id"]),
                                  _TEMPLATE_KEYS))
        except errors.CloudStackObjectNotFound:
            # Deleted since, or an ISO: the VM still names it.
            LOG.warning("CloudStack template %s of VM %s is not listed",
                        template["id"], vm["id"])
    return template


def _offering(client, vm):
    offering = {"id": vm.get("serviceofferingid"),
                "name": vm.get("serviceofferingname"),
                "cpunumber": vm.get("cpunumber"),
                "cpuspeed": vm.get("cpuspeed"), "memory": vm.get("memory"),
                "iscustomized": None}
    if offering["id"]:
        try:
            listed = client.get_service_offering(offering["id"])
            # A custom offering lists no cpu or memory: keep the VM's.
            offering.update({k: v for k, v in _pick(listed, _OFFERING_KEYS)
                             .items() if v is not None})
        except errors.CloudStackObjectNotFound:
            LOG.warning("CloudStack service offering %s of VM %s is not "
                        "listed", offering["id"], vm["id"])
    return offering


def describe_vm(client, ref):
    """Describe the VM with id or name *ref* (see the module docstring).

    Keys: the VM's own (``id``, ``name``, ``displayname``,
    ``instancename``, ``state``, ``hypervisor``, the owner: ``account``
    (None for a project's VM), ``domain``, ``domainid``, ``domainpath``,
    ``projectid`` and ``project`` (a CloudStack project's VM),
    ``zoneid``, ``zonename``, ``cpunumber``, ``cpuspeed``, ``memory`` in
    MiB); ``keypairs`` (names joined with ","); ``tags`` [{key,
    value}]; ``details`` without the secret ones
    (public_details); ``host`` {id, name, ipaddress} (all None while the VM is
    stopped); ``serviceoffering`` and ``template``; ``nics`` in device
    order; ``root_volume`` {id, name, type, path, size, provisioningtype,
    storageid, state, deviceid, ``storage``: the pool {id, name, type, path,
    ipaddress, scope, state}} or None; ``datadisks`` (the same, in device
    id order, each with its ``file``: as a KVM host sees it, or None);
    ``overlay_path``: the root volume file as a KVM host
    sees it, or None when that cannot be known; ``securitygroups``
    [{id, name, description, ingress, egress}] (rules as _sg_rule makes
    them) and ``referenced_securitygroups``: the groups their rules allow
    that the VM is not in.
    """
    vm = client.find_vm(ref)
    desc = _pick(vm, _VM_KEYS)
    desc["tags"] = _tags(vm)
    desc["details"] = public_details(vm.get("details"))
    desc["host"] = _host(client, vm)
    desc["serviceoffering"] = _offering(client, vm)
    desc["template"] = _template(client, vm)
    desc["nics"] = [_pick(nic, _NIC_KEYS)
                    for nic in sorted(vm.get("nic") or [], key=_device_order)]
    volumes = client.list_volumes(vm["id"], vm.get("projectid"))
    # One listStoragePools per pool, however many volumes share it.
    pool_of = functools.cache(client.get_storage_pool)
    roots = [v for v in volumes if v.get("type") == "ROOT"]
    root = _with_pool(pool_of, _pick(roots[0], _VOLUME_KEYS)) \
        if roots else None
    desc["root_volume"] = root
    desc["datadisks"] = [_with_pool(pool_of, _pick(v, _VOLUME_KEYS))
                         for v in sorted(volumes, key=_device_order)
                         if v.get("type") == "DATADISK"]
    desc["overlay_path"] = root["file"] if root else None
    desc["securitygroups"], desc["referenced_securitygroups"] = \
        _security_groups(client, vm)
    return desc


def validate_vm(desc):
    """What stops cs2os from moving the described VM, in plain words."""
    name = "VM %s (%s)" % (desc.get("name"), desc.get("id"))
    problems = []
    hypervisor = desc.get("hypervisor") or "an unknown hypervisor"
    if hypervisor.upper() != "KVM":
        problems.append("%s runs on %s; cs2os moves KVM VMs only"
                        % (name, hypervisor))
    if desc.get("state") not in MOVABLE_STATES:
        problems.append(
            "%s is %s; it must be Running or Stopped (wait until CloudStack "
            "has finished what it is doing with it)" % (name, desc["state"]))
    root = desc.get("root_volume")
    if root is None:
        problems.append("%s has no ROOT volume CloudStack lists" % name)
    elif not root.get("path") or not desc.get("instancename"):
        problems.append(
            "CloudStack hides the volume path, storage pool and instance "
            "name of %s from this API key: [cloudstack] api_key must belong "
            "to a root admin" % name)
    else:
        problems.extend(_volume_problems(name, root, "root volume",
                                         (NFS, RBD)))
    for disk in desc.get("datadisks") or []:
        if not disk.get("path"):
            continue  # hidden from a non-admin key: said above
        problems.extend(_volume_problems(name, disk, "data disk",
                                         (NFS, RBD)))
    problems.extend(_security_group_problems(desc))
    return problems


def _security_group_problems(desc):
    """A rule allowing a group CloudStack does not list cannot be mapped:
    left out, it would allow less, or (its group's only egress rule) all
    egress."""
    return ["a rule of security group %s (%s) allows group %s of account "
            "%s, which CloudStack does not list" % (
                group["name"], group["id"], rule["group"],
                rule["group_account"])
            for group in (desc.get("securitygroups") or [])
            + (desc.get("referenced_securitygroups") or [])
            for rule in group["ingress"] + group["egress"]
            if rule["group"] and not rule["group_id"]]


def _with_pool(pool_of, volume):
    """A volume with its pool (``storage``, ``pool_of(id)`` picked) and
    its file as a KVM host sees it (``file``, None when unknown)."""
    volume["storage"] = None
    if volume.get("storageid"):
        volume["storage"] = _pick(pool_of(volume["storageid"]), _POOL_KEYS)
    volume["file"] = (overlay_path(volume["storage"], volume["path"])
                      if volume.get("path") else None)
    return volume


def _volume_problems(name, root, kind, pool_types=(NFS,)):
    volume = "%s %s (%s) of %s" % (kind, root.get("name"), root.get("id"),
                                   name)
    problems = []
    if root.get("state") not in (None, "Ready"):
        problems.append("%s is %s, not Ready" % (volume, root["state"]))
    pool = root.get("storage") or {}
    if pool.get("type") not in pool_types:
        # Directory pools keep files at <pool path>/<file>, and their
        # overlays name templates by that path: the transports only know
        # NFS's /mnt/<pool uuid> layout so far.  An RBD root volume is a
        # raw clone, which the root disk's overlay method cannot adopt yet.
        problems.append(
            "%s is on %s primary storage %s; cs2os reads %ss from %s only "
            "so far"
            % (volume, pool.get("type") or "unknown",
               pool.get("name") or root.get("storageid"), kind,
               " or ".join(_POOL_NAMES[t] for t in pool_types)))
    return problems
