"""The steps that prepare the target: validate, ports, boot.

Nothing here touches the CloudStack VM: validate checks it and claims it,
ports gives the server the VM's MACs and IPs on Neutron, boot creates the
Nova server on the template image (and stops it, through Nova) so that the
agent can swap its disk.  Each step first looks at what the record says was
already done, and at the real world, so that calling it twice is harmless.
"""

import math

from cs2os_agent.cloudstack import discovery
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import maps
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import datadisks
from cs2os_agent.conductor.flow import identity
from cs2os_agent.conductor.flow import image
from cs2os_agent.conductor.flow import keypair
from cs2os_agent.conductor.flow import nics
from cs2os_agent.conductor.flow import owner
from cs2os_agent.conductor.flow import placement
from cs2os_agent.conductor.flow import rootdisk
from cs2os_agent.conductor.flow import secgroups

GiB = 1024 ** 3
# Nova's limit on a server's user data, base64 (its API schema).
MAX_USER_DATA = 65535


def validate(ctx):
    """Check the CloudStack VM and its overlay's header, pick the flavor,
    check the target host and plan the NICs; then claim the VM."""
    cs = ctx.clients.cloudstack
    vm = discovery.describe_vm(cs, ctx.migration["source_ref"])
    problems = discovery.validate_vm(vm)
    if problems:
        raise exception.Invalid(
            reason="CloudStack VM %s cannot be migrated: %s"
            % (vm["name"], "; ".join(problems)))
    disk = rootdisk.read(ctx, vm)
    header, layers = disk.header, disk.layers
    snapshots = snapshots_outcome(ctx, vm, header, layers)
    project, project_chosen_by = owner.target_project(ctx, vm)
    owner.check_access(ctx, project)
    flavor, chosen_by = choose_flavor(ctx, vm, header.virtual_size)
    host = ctx.migration["target_host"]
    aggregate = placement.requested(ctx.migration)
    hosts = None
    if aggregate:
        # The host is chosen at admission, among those usable now.
        hosts = placement.check(ctx, aggregate)
    elif host:
        ctx.clients.openstack.check_compute_host(host)
        require_agent(ctx, host)
    owner.record(ctx, project, project_chosen_by)
    # In the target project (its Cinder quota): after owner.record.
    data_disks = datadisks.plan(ctx, vm)
    options = ctx.migration["options"] or {}
    network_map = dict(ctx.conf.cloudstack.network_map,
                       **(options.get("networks") or {}))
    nic_plan, dropped = nics.plan(
        ctx.id, vm.get("nics") or [], network_map,
        options.get("drop_unmapped_nics", False), ctx.network)
    # Claims the VM (unique while active): a second migration of it, by
    # whatever name, fails here naming the first.
    ctx.save(source=vm, source_vm_id=vm["id"], source_vm_name=vm["name"],
             active_source=vm["id"])
    if dropped:
        ctx.result(dropped_nics=dropped)
    if snapshots:
        ctx.result(internal_snapshots=snapshots)
    ctx.result(flavor_chosen_by=chosen_by)
    ctx.resource(
        nic_plan=nic_plan,
        flavor_id=flavor.id,
        flavor_name=flavor.name,
        overlay_source=disk.source,
        overlay_format=disk.fmt,
        overlay_virtual_size=header.virtual_size,
        # None: a FAT or SPARSE volume (or a raw one) holds the whole disk
        # itself.
        template_path=disk.template_path,
        layers=layers,
        source_state_at_start=vm["state"],
        data_disks=data_disks,
    )
    # Last: a migration that would fail validate never waits for a slot.
    admission.admit(ctx, vm, placement=hosts)


def snapshots_outcome(ctx, vm, header, layers):
    """What becomes of the root volume's internal snapshots (CloudStack VM
    snapshots), None if it has none; refuses keep_snapshots where they
    cannot be kept.  The agent's sync result says more once it copied."""
    if not header.snapshots:
        return None
    keep = bool((ctx.migration["options"] or {}).get("keep_snapshots"))
    if keep and layers:
        raise exception.Invalid(
            reason="the root volume of CloudStack VM %s has %d layer(s) "
            "between it and its template: merging them rewrites its current "
            "state only, so its %d internal snapshots cannot be kept; "
            "migrate without keep_snapshots" % (
                vm["name"], len(layers), header.snapshots))
    if ctx.migration["mode"] == states.WARM:
        note = ("a warm migration mirrors the current state: Nova cannot "
                "use internal snapshots, and they were left behind in "
                "CloudStack")
    elif keep:
        note = "to be kept in the disk, as the request asked"
    else:
        note = ("Nova cannot use internal snapshots: the current state is "
                "migrated and the snapshots left behind in CloudStack")
    ctx.event("validate", "the root volume holds %d internal snapshots; %s"
              % (header.snapshots, note))
    return {"count": header.snapshots, "kept": keep, "note": note}


def choose_flavor(ctx, vm, overlay_size):
    """(flavor, how it was chosen): the request's; else the one the
    request's flavor_map, then [cloudstack] flavor_map, gives the VM's
    service offering (by id, then name); else the smallest that fits the
    VM."""
    openstack = ctx.clients.openstack
    ref, chosen_by = ctx.migration["flavor"], "request"
    if not ref:
        offering = vm.get("serviceoffering") or {}
        found = maps.choose(ctx, "flavor_map",
                            (offering.get("id"), offering.get("name")))
        if found is None:
            return openstack.smallest_flavor(
                vm["cpunumber"], vm["memory"],
                math.ceil(overlay_size / GiB)), "smallest fitting"
        ref, key, where = found
        chosen_by = "%s (service offering %s)" % (where, key)
    try:
        flavor = openstack.get_flavor(ref)
    except exception.Invalid as exc:
        raise exception.Invalid(
            reason="%s, named by the %s" % (exc.kwargs.get("reason"),
                                            chosen_by)) from None
    if flavor.disk * GiB < overlay_size:
        raise exception.OverlayTooLarge(
            overlay_size=overlay_size, disk_size=flavor.disk * GiB)
    return flavor, chosen_by


def ports(ctx):
    """One Neutron port per planned NIC, in the target project: same MAC,
    same IP where it fits."""
    neutron = ctx.network
    # The VM's CloudStack security groups, found or made in the target
    # project; none: Neutron gives the ports the project's default group.
    sg_ids = secgroups.ensure(ctx)
    created = {p["index"]: p for p in ctx.resources.get("ports") or []}
    for entry in ctx.resources.get("nic_plan") or []:
        port = None
        if entry["index"] in created:
            port = _existing_port(neutron, created[entry["index"]]["id"])
        # A port of an earlier attempt that died before recording it.
        port = port or neutron.find_port(
            entry["port_name"], network_id=entry["neutron_network_id"],
            mac=entry["mac"])
        if port is None:
            ctx.guard()
            port = neutron.create_port(
                entry["port_name"], entry["neutron_network_id"],
                entry["mac"], entry["subnet_id"], entry["ip"],
                description="cs2os migration %s: CloudStack NIC %s on %s"
                % (ctx.id, entry["mac"], entry["cloudstack_network"]),
                security_groups=sg_ids)
        created[entry["index"]] = {"index": entry["index"], "id": port.id}
        ctx.resource(ports=sorted(created.values(),
                                  key=lambda p: p["index"]))
    if ctx.resources.get("nic_plan"):
        ctx.result(nics=[_nic_result(entry, neutron.get_port(
            created[entry["index"]]["id"]))
            for entry in ctx.resources["nic_plan"]])


def _nic_result(entry, port):
    ips = [f["ip_address"] for f in port.fixed_ips or []]
    return {
        "cloudstack_network": entry["cloudstack_network"],
        "cloudstack_network_id": entry["cloudstack_network_id"],
        "neutron_network": entry["neutron_network"],
        "neutron_network_id": entry["neutron_network_id"],
        "port_id": port.id,
        "mac": port.mac_address,
        "cloudstack_ip": entry["cloudstack_ip"],
        "ip": ips[0] if ips else None,
        "ip_preserved": entry["cloudstack_ip"] in ips,
        "mac_preserved": port.mac_address == entry["mac"],
    }


def _existing_port(neutron, port_id):
    try:
        return neutron.get_port(port_id)
    except exception.OpenStackError:
        return None


def boot(ctx):
    """The Nova server on the template image, on the chosen host, then
    stopped through Nova so that the agent can swap its disk.  The server
    is the target project's, booted by cs2os's user there."""
    openstack = ctx.openstack
    resources = ctx.resources
    server = None
    if resources.get("server_id"):
        server = _existing_server(openstack, resources["server_id"])
    if server is None:
        server = openstack.find_server(ctx.id)
    if server is None:
        vm = ctx.migration["source"]
        image.share(ctx, resources["image_id"])
        metadata, skipped = identity.metadata(vm)
        user_data = _user_data(ctx, vm)
        key_name = keypair.ensure(ctx, vm)
        options = ctx.migration["options"] or {}
        ctx.guard()
        server = openstack.create_server(
            vm["name"], resources["image_id"], resources["flavor_id"],
            ctx.migration["target_host"], ctx.id, metadata,
            ports=[p["id"] for p in resources.get("ports") or []],
            tags=identity.tags(vm), user_data=user_data,
            config_drive=bool(options.get("config_drive")),
            key_name=key_name)
        ctx.resource(server_id=server.id)
        ctx.result(identity={
            "metadata_items": len(metadata), "metadata_skipped": skipped,
            "tags": identity.tags(vm), "user_data": user_data is not None,
            "config_drive": bool(options.get("config_drive"))})
    ctx.resource(server_id=server.id)
    if openstack.get_server(server.id).status != "SHUTOFF":
        server = openstack.wait_server(server.id, "ACTIVE")
    server = openstack.get_server(server.id)
    host = server.compute_host
    ctx.resource(host=host)
    ctx.save(compute_host=host)
    require_agent(ctx, host)
    probe = ctx.clients.agent.probe_instance(ctx.admin_context, host,
                                             server.id)
    if probe["virtual_size"] < resources["overlay_virtual_size"]:
        raise exception.OverlayTooLarge(
            overlay_size=resources["overlay_virtual_size"],
            disk_size=probe["virtual_size"])
    # Through Nova: a domain stopped behind its back is restarted by the
    # power-state sync.
    ctx.guard()
    openstack.stop_server(server.id)


def _user_data(ctx, vm):
    """The VM's CloudStack user data for Nova (base64), or None.  A
    CloudStack that cannot say (an older one without the command) leaves a
    note: the guest is provisioned already; its disk is what must move."""
    try:
        user_data = ctx.clients.cloudstack.get_user_data(vm["id"])
    except cloudstack_errors.CloudStackError as exc:
        ctx.event("boot", "the VM's user data was not carried over: %s"
                  % exc, kind="warning")
        return None
    if user_data is not None and len(user_data) > MAX_USER_DATA:
        raise exception.Invalid(
            reason="the user data of CloudStack VM %s is %d bytes base64; "
            "Nova takes at most %d" % (vm["name"], len(user_data),
                                       MAX_USER_DATA))
    return user_data


def require_agent(ctx, host):
    """A cs2os-agent answers on compute host ``host``."""
    try:
        ctx.clients.agent.get_agent_info(ctx.admin_context, host, timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure means no agent
        raise exception.Invalid(
            reason="no cs2os-agent answers on compute host %s (%s)"
            % (host, type(exc).__name__)) from None


def _existing_server(openstack, server_id):
    try:
        return openstack.get_server(server_id)
    except Exception:  # noqa: BLE001 - gone: boot anew
        return None


def undo_boot(ctx):
    """Before the commit: delete the server this migration made."""
    resources = ctx.resources
    if not resources.get("server_id") or ctx.committed:
        return None
    ctx.guard()
    ctx.openstack.delete_server(resources["server_id"])
    ctx.resource(server_id=None, host=None)
    return "deleted server %s" % resources["server_id"]


def undo_ports(ctx):
    """Delete the ports this migration made (found by record and by name),
    after the server that used them is gone."""
    resources = ctx.resources
    if ctx.committed or resources.get("server_id"):
        return None
    neutron = ctx.network
    ids = {p["id"] for p in resources.get("ports") or []}
    for entry in resources.get("nic_plan") or []:
        port = neutron.find_port(entry["port_name"],
                                 network_id=entry["neutron_network_id"],
                                 mac=entry["mac"])
        if port is not None:
            ids.add(port.id)
    for port_id in sorted(ids):
        neutron.delete_port(port_id)
    ctx.resource(ports=[])
    said = "deleted ports %s" % ", ".join(sorted(ids)) if ids else None
    groups = secgroups.undo(ctx)
    return "; ".join(m for m in (said, groups) if m) or None
