"""What the migrated server carries of the CloudStack VM's identity.

The server is named after the VM's name, which is the guest's host name in
CloudStack (Nova derives the host name its metadata service hands
cloud-init from the server name; the display name, often with spaces,
would rename the guest).  Everything else an operator would search by goes
into Nova metadata (key=value, shown by ``openstack server show``) and two
server tags (``openstack server list --tags cloudstack-vm:<id>`` filters
in Nova itself): the VM's ids and names, its owner, zone, offering and
template, its CloudStack tags and its details (discovery leaves the
secret ones out before anything is recorded).
"""

CLOUDSTACK_TAG = "cloudstack"
VM_TAG = "cloudstack-vm:%s"
TAG_PREFIX = "cloudstack_tag:"
DETAIL_PREFIX = "cloudstack_detail:"
# Nova's limits: keys and values of at most 255 characters, and by default
# 128 items per server (quota metadata_items), cs2os's own included.
MAX_LENGTH = 255
MAX_ITEMS = 128
def _own_items(vm):
    template = vm.get("template") or {}
    offering = vm.get("serviceoffering") or {}
    items = [
        ("cloudstack_vm_id", vm.get("id")),
        ("cloudstack_vm_name", vm.get("name")),
        ("cloudstack_display_name", vm.get("displayname")),
        ("cloudstack_instance_name", vm.get("instancename")),
        ("cloudstack_zone", vm.get("zonename")),
        ("cloudstack_domain", vm.get("domainpath") or vm.get("domain")),
        ("cloudstack_account", vm.get("account")),
        ("cloudstack_project", vm.get("project")),
        ("cloudstack_project_id", vm.get("projectid")),
        ("cloudstack_service_offering", offering.get("name")),
        ("cloudstack_template_id", template.get("id")),
        ("cloudstack_template_name", template.get("name")),
    ]
    return [(k, str(v)) for k, v in items if v not in (None, "")]


def metadata(vm, reserved=1):
    """(metadata, skipped): the server's metadata, and what did not fit
    (a key or value over 255 characters, or more than 128 items with the
    ``reserved`` ones cs2os adds itself), each as "key: why"."""
    items = _own_items(vm)
    items += [(TAG_PREFIX + str(t.get("key")), str(t.get("value") or ""))
              for t in vm.get("tags") or []]
    # discovery recorded the public details only; the SSH ones travel as
    # the server's key pair (keypair.py).
    items += [(DETAIL_PREFIX + k, v)
              for k, v in sorted((vm.get("details") or {}).items())
              if not k.startswith("SSH.")]
    kept, skipped = {}, []
    for key, value in items:
        if len(key) > MAX_LENGTH or len(value) > MAX_LENGTH:
            skipped.append("%s: longer than %d characters" % (key[:60],
                                                             MAX_LENGTH))
        elif len(kept) + reserved >= MAX_ITEMS:
            skipped.append("%s: over Nova's %d metadata items" % (
                key[:60], MAX_ITEMS))
        else:
            kept[key] = value
    return kept, skipped


def tags(vm):
    """Nova server tags (at most 60 characters, no "/" or ",")."""
    return [CLOUDSTACK_TAG, VM_TAG % vm["id"]]
