"""The steps of a cold migration, and how each is undone.

Every step first looks at what the record says was already done (and at
the real world: the server, the VM), so that calling it twice is harmless.
"""

import hashlib
import json
import math
import os
import tempfile
import time

from oslo_log import log as logging

from cs2os_agent import guestview
from cs2os_agent import qcow2
from cs2os_agent import transfer
from cs2os_agent.cloudstack import discovery
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import agentcall
from cs2os_agent.conductor.flow import nics
from cs2os_agent.conductor.flow import sources
from cs2os_agent.openstack import client as os_client
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as transfer_partial

LOG = logging.getLogger(__name__)
GiB = 1024 ** 3
SYNC_BUSY_POLL = 10
PLACEHOLDER_BYTES = 1024 * 1024


def validate(ctx):
    cs = ctx.clients.cloudstack
    vm = discovery.describe_vm(cs, ctx.migration["source_ref"])
    problems = discovery.validate_vm(vm)
    if problems:
        raise exception.Invalid(
            reason="CloudStack VM %s cannot be migrated: %s"
            % (vm["name"], "; ".join(problems)))
    overlay_source = sources.source_for(ctx.conf, vm, vm["overlay_path"])
    with transfer.get_source(overlay_source, ctx.conf) as src:
        header = qcow2.inspect_header(
            src.read_header(qcow2.HEADER_BYTES), src.describe())
    if header.has_backing:
        # The template as the file says, not as names suggest.
        sources.pool_relative(header.backing_file,
                              vm["root_volume"]["storage"]["id"])
    openstack = ctx.clients.openstack
    disk_gib = math.ceil(header.virtual_size / GiB)
    if ctx.migration["flavor"]:
        flavor = openstack.get_flavor(ctx.migration["flavor"])
        if flavor.disk * GiB < header.virtual_size:
            raise exception.OverlayTooLarge(
                overlay_size=header.virtual_size, disk_size=flavor.disk * GiB)
    else:
        flavor = openstack.smallest_flavor(vm["cpunumber"], vm["memory"],
                                           disk_gib)
    host = ctx.migration["target_host"]
    if host:
        openstack.check_compute_host(host)
        _require_agent(ctx, host)
    options = ctx.migration["options"] or {}
    network_map = dict(ctx.conf.cloudstack.network_map,
                       **(options.get("networks") or {}))
    nic_plan, dropped = nics.plan(
        ctx.id, vm.get("nics") or [], network_map,
        options.get("drop_unmapped_nics", False), ctx.clients.network)
    # Claims the VM (unique while active): a second migration of it, by
    # whatever name, fails here naming the first.
    ctx.save(source=vm, source_vm_id=vm["id"], source_vm_name=vm["name"],
             active_source=vm["id"])
    if dropped:
        ctx.result(dropped_nics=dropped)
    ctx.resource(
        nic_plan=nic_plan,
        flavor_id=flavor.id,
        flavor_name=flavor.name,
        overlay_source=overlay_source,
        overlay_virtual_size=header.virtual_size,
        # None: a FAT or SPARSE volume holds the whole disk itself.
        template_path=header.backing_file if header.has_backing else None,
        source_state_at_start=vm["state"],
    )


def image(ctx):
    resources = ctx.resources
    vm = ctx.migration["source"]
    if resources["template_path"] is None:
        return _placeholder_image(ctx)
    template_source = sources.source_for(ctx.conf, vm,
                                         resources["template_path"])
    openstack = ctx.clients.openstack
    with transfer.get_source(template_source, ctx.conf) as src:
        header = qcow2.inspect_header(
            src.read_header(qcow2.HEADER_BYTES), src.describe())
        if header.has_backing:
            raise exception.Invalid(
                reason="template %s has a backing file of its own (%s)"
                % (resources["template_path"], header.backing_file))
        fingerprint = _fingerprint_key(src.fingerprint())
        found = openstack.find_template_image(vm["template"]["id"],
                                              fingerprint)
        if found is not None:
            ctx.resource(image_id=found.id)
            ctx.result(image_reused=True, template_bytes_moved=0)
            ctx.event("image", "template already in Glance as image %s"
                      % found.id)
            return
        with tempfile.TemporaryDirectory(
                dir=ctx.conf.conductor.image_spool_dir) as spool_dir:
            path = os.path.join(spool_dir, "template.qcow2")
            copied = spool(ctx, src, path)
            digest = _sha512(path)
            # While B is here: its guest view, which a warm migration's
            # shallow mirror must prove D equals (recorded once per image).
            started = time.monotonic()
            guest = guestview.guest_digest(path, "qcow2", spool_dir)
            guest["seconds"] = round(time.monotonic() - started, 3)
            image = openstack.upload_image(
                "cloudstack-template-%s" % vm["template"]["name"], path,
                "qcow2",
                {os_client.TEMPLATE_KEY: vm["template"]["id"],
                 os_client.FINGERPRINT_KEY: fingerprint,
                 os_client.HASH_KEY: digest,
                 os_client.GUEST_DIGEST_KEY: guest["digest"],
                 os_client.GUEST_SIZE_KEY: str(guest["virtual_size"])})
    # Glance hashed what it stored: it must be what we read at the source,
    # or the unsafe rebase onto Nova's copy of it would be wrong.
    if image.hash_algo == "sha512" and image.hash_value != digest:
        openstack.conn.image.delete_image(image.id)
        raise exception.ImagesDiffer(
            left=resources["template_path"], right="image %s" % image.id,
            detail="sha512 %s at the source, %s in Glance"
            % (digest, image.hash_value))
    ctx.resource(image_id=image.id)
    ctx.result(image_reused=False, template_bytes_moved=copied,
               template_sha512=digest, template_guest_digest=guest)


def _placeholder_image(ctx):
    """A volume without a backing file (CloudStack FAT or SPARSE
    provisioning) replaces Nova's disk whole, so the server only needs some
    image to boot from first: one small blank image, made once."""
    openstack = ctx.clients.openstack
    found = openstack.find_placeholder_image()
    if found is None:
        with tempfile.TemporaryDirectory(
                dir=ctx.conf.conductor.image_spool_dir) as spool:
            path = os.path.join(spool, "placeholder.raw")
            with open(path, "wb") as f:
                f.truncate(PLACEHOLDER_BYTES)
            found = openstack.upload_image(
                "cs2os-placeholder", path, "raw",
                {os_client.PLACEHOLDER_KEY: "1"})
    ctx.resource(image_id=found.id)
    ctx.result(image_reused=False, template_bytes_moved=0,
               standalone_volume=True)
    ctx.event("image", "root volume %s has no backing file: the whole "
              "volume moves; the server boots from placeholder image %s "
              "first" % (ctx.migration["source"]["overlay_path"], found.id))


def ports(ctx):
    """One Neutron port per planned NIC: same MAC, same IP where it fits."""
    neutron = ctx.clients.network
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
                % (ctx.id, entry["mac"], entry["cloudstack_network"]))
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
    openstack = ctx.clients.openstack
    resources = ctx.resources
    server = None
    if resources.get("server_id"):
        server = _existing_server(openstack, resources["server_id"])
    if server is None:
        server = openstack.find_server(ctx.id)
    if server is None:
        vm = ctx.migration["source"]
        ctx.guard()
        server = openstack.create_server(
            vm["name"], resources["image_id"], resources["flavor_id"],
            ctx.migration["target_host"], ctx.id,
            {"cloudstack_vm_id": vm["id"]},
            ports=[p["id"] for p in resources.get("ports") or []])
    ctx.resource(server_id=server.id)
    if openstack.get_server(server.id).status != "SHUTOFF":
        server = openstack.wait_server(server.id, "ACTIVE")
    server = openstack.get_server(server.id)
    host = server.compute_host
    ctx.resource(host=host)
    ctx.save(compute_host=host)
    _require_agent(ctx, host)
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


def stop_source(ctx):
    cs = ctx.clients.cloudstack
    vm = cs.find_vm(ctx.migration["source_vm_id"])
    if vm["state"] == "Running":
        # Recorded first: if we die during the stop, rollback starts it.
        ctx.resource(source_stopped=True)
        ctx.guard()
        cs.stop_vm(vm["id"])
    elif vm["state"] != "Stopped":
        raise exception.Invalid(
            reason="CloudStack VM %s is %s" % (vm["name"], vm["state"]))


def sync(ctx):
    resources = ctx.resources
    while True:
        try:
            result = agentcall.call(
                ctx, "sync", "sync_overlay", ctx.id,
                resources["server_id"], resources["overlay_source"])
            break
        except exception.MigrationBusy as exc:
            # Our own copy, started before a conductor restart, is still
            # running on the agent: wait for it, then collect its result.
            if exc.kwargs.get("owner") != ctx.id:
                raise
            ctx.check_cancelled("sync")
            time.sleep(SYNC_BUSY_POLL)
    ctx.save(bytes_done=result["bytes_copied"],
             bytes_total=result["bytes_copied"])
    ctx.result(sync=result)


def swap(ctx):
    resources = ctx.resources
    # Recorded first: an agent that dies after swapping but before its
    # answer leaves the rollback something to restore (a restore with
    # nothing swapped does nothing).
    ctx.resource(swapped=True)
    agentcall.call(ctx, "swap", "swap_disk", ctx.id, resources["server_id"])


def start(ctx):
    """The commit: the CloudStack VM must still be stopped, then the
    point of no return is recorded, then Nova starts the server."""
    resources = ctx.resources
    if not ctx.committed:
        require_source_stopped(ctx)
    request_start(ctx)
    server = ctx.clients.openstack.wait_server(resources["server_id"],
                                              "ACTIVE")
    ctx.result(server_id=server.id, host=resources["host"],
               server_status=server.status)


def request_start(ctx):
    """Commit, then ask Nova to start the server on the migrated disk.

    The commit is recorded first: a conductor that dies during the call
    cannot know whether Nova started the guest, so from then on it counts
    as started.  Only a start Nova refused outright takes it back.
    """
    ctx.commit()
    try:
        ctx.clients.openstack.request_start(ctx.resources["server_id"])
    except exception.StartRefused:
        ctx.uncommit()
        raise


def require_source_stopped(ctx):
    """Before the commit: CloudStack says the VM is (still) stopped.

    Someone may have started it since cs2os stopped it (from CloudStack's
    UI, HA): then the migrated disk is already stale and two copies would
    run; the migration fails before the commit and the rollback leaves the
    running VM alone (it is Running: nothing to start).
    """
    ctx.guard()
    vm = ctx.clients.cloudstack.find_vm(ctx.migration["source_vm_id"])
    if vm["state"] != "Stopped":
        raise exception.SourceNotStopped(
            vm=vm["name"], detail="CloudStack says %s" % vm["state"])


def cleanup(ctx):
    """After the commit: the agent drops Nova's original disk and its
    bookkeeping for this migration."""
    agentcall.call(ctx, "cleanup", "cleanup", ctx.id,
                   ctx.resources["server_id"])


def retire_source(ctx):
    """After the commit: make sure the CloudStack VM can never run again.

    Destroyed on request (delete_source); otherwise, with [cloudstack]
    unmanage_source, CloudStack forgets it (its volume files stay) so
    nobody can start it from CloudStack's UI; else it stays Stopped.
    """
    cs = ctx.clients.cloudstack
    vm_id = ctx.migration["source_vm_id"]
    ctx.guard()
    if ctx.migration["delete_source"]:
        if not ctx.migration["result"].get("source_deleted"):
            cs.destroy_vm(vm_id)
            ctx.result(source_deleted=True)
    elif ctx.conf.cloudstack.unmanage_source:
        if not ctx.migration["result"].get("source_unmanaged"):
            try:
                cs.unmanage_vm(vm_id)
            except cloudstack_errors.CloudStackVMNotFound:
                pass  # an earlier attempt unmanaged it
            ctx.result(source_unmanaged=True)
    else:
        ctx.warn("retire_source", "CloudStack VM %s stays Stopped in "
                 "CloudStack ([cloudstack] unmanage_source is off): starting "
                 "it there would run a second copy of the guest"
                 % ctx.migration["source_vm_name"])


# Steps after the commit that only tidy up: a failure leaves a warning
# and the migration still succeeds (the guest runs in Nova).  A warm
# flow's stop_source runs after its commit (it stops the frozen source).
TIDY_STEPS = frozenset(("stop_source", "cleanup", "retire_source"))

COLD = [
    ("validate", validate),
    ("image", image),
    ("ports", ports),
    ("boot", boot),
    ("stop_source", stop_source),
    ("sync", sync),
    ("swap", swap),
    ("start", start),
    ("cleanup", cleanup),
    ("retire_source", retire_source),
]


# -- rollback ------------------------------------------------------------


def undo_swap(ctx):
    resources = ctx.resources
    if not resources.get("swapped") or ctx.committed:
        return None
    ctx.guard()
    ctx.clients.openstack.stop_server(resources["server_id"])
    answer = agentcall.call(ctx, "rollback", "restore_disk", ctx.id,
                            resources["server_id"])
    ctx.resource(swapped=False)
    if not answer.get("restored"):
        return None  # the swap itself never happened
    return "put Nova's original disk back on server %s" % (
        resources["server_id"])


def undo_boot(ctx):
    resources = ctx.resources
    if not resources.get("server_id") or ctx.committed:
        return None
    ctx.guard()
    ctx.clients.openstack.delete_server(resources["server_id"])
    ctx.resource(server_id=None, host=None)
    return "deleted server %s" % resources["server_id"]


def undo_ports(ctx):
    """Delete the ports this migration made (found by record and by name),
    after the server that used them is gone."""
    resources = ctx.resources
    if ctx.committed or resources.get("server_id"):
        return None
    neutron = ctx.clients.network
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
    return "deleted ports %s" % ", ".join(sorted(ids)) if ids else None


def undo_stop_source(ctx):
    """Start the CloudStack VM cs2os stopped: never once committed (the
    guest is Nova's), and not if it runs already (someone started it)."""
    if not ctx.resources.get("source_stopped") or ctx.committed:
        return None
    cs = ctx.clients.cloudstack
    vm_id = ctx.migration["source_vm_id"]
    if cs.find_vm(vm_id)["state"] == "Running":
        ctx.resource(source_stopped=False)
        return None
    ctx.guard()
    cs.start_vm(vm_id)
    ctx.resource(source_stopped=False)
    return "started CloudStack VM %s again" % ctx.migration["source_vm_name"]


ROLLBACK = [
    ("undo_swap", undo_swap),
    ("undo_boot", undo_boot),
    ("undo_ports", undo_ports),
    ("undo_stop_source", undo_stop_source),
]


# -- helpers -------------------------------------------------------------


def _require_agent(ctx, host):
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


def _fingerprint_key(fingerprint):
    return hashlib.sha256(
        json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def spool(ctx, src, path):
    """Copy a template to ``path`` with the resumable, throttled copy."""
    partial = transfer_partial.PartialFile(
        path, path + ".json", src.fingerprint(),
        ctx.conf.transfer.checkpoint_mib * 1024 * 1024)
    partial.resume_offset()
    monitor = transfer_monitor.TransferMonitor(
        ctx.id, "image", src.bytes_to_copy(),
        report=ctx.progress,
        interval=ctx.conf.agent.progress_interval,
        max_bandwidth_mbps=ctx.conf.transfer.max_bandwidth_mbps)
    partial.open(0)
    try:
        copied = src.copy_to(partial, monitor)
        partial.finish(src.size())
    except BaseException:
        partial.discard()
        raise
    monitor.finish()
    return copied


def _sha512(path):
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 * 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
