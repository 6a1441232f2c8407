"""Data disks: every CloudStack DATADISK becomes a Cinder volume.

The steps, each with the cold flow's others (cold.py):

validate      plan      each disk's chain read through the transport
                        (headers only, as the root's), its size and
                        volume type; the project's Cinder quota must hold
                        them all, or nothing is created
volumes       volumes   the volumes, made in the target project (or found
                        by their metadata after a crash) and attached
                        through Nova to the stopped server in device id
                        order, so the guest sees them in the same order
sync_volumes  sync      the agent writes each disk into its volume and
                        proves the volume's guest view equals the disk's
rollback      undo      after the server is deleted (which detaches them),
                        the volumes are deleted; CloudStack's data disks
                        are only ever read

A warm migration plans the same disks (files on NFS, or images on RBD)
and fills the volumes with its mirrors instead of sync (warmdisks.py).
"""

import math

from cs2os_agent import qcow2
from cs2os_agent import transfer
from cs2os_agent.cloudstack import discovery
from cs2os_agent.common import exception
from cs2os_agent.conductor import maps
from cs2os_agent.conductor.flow import agentcall
from cs2os_agent.conductor.flow import chain
from cs2os_agent.conductor.flow import sources

GiB = 1024 ** 3


def plan(ctx, vm):
    """One entry per data disk, in device id order (the ``data_disks``
    resource); refuses what cannot move before anything is created."""
    disks = vm.get("datadisks") or []
    if not disks:
        return []
    planned = [_plan_disk(ctx, vm, disk) for disk in disks]
    _check_types(ctx, planned)
    _check_quota(ctx, vm, planned)
    return planned


def _plan_disk(ctx, vm, disk):
    pool = disk["storage"]
    if pool.get("type") == discovery.RBD:
        return _plan_rbd_disk(ctx, disk)
    top = sources.source_for(ctx.conf, vm, disk["file"], pool)
    with transfer.get_source(top, ctx.conf) as src:
        header = qcow2.inspect_header(
            src.read_header(qcow2.HEADER_BYTES), src.describe())
    template_path, layers = chain.walk(ctx, vm, header, disk)
    files = [top] + layers
    if template_path:
        files.append(sources.source_for(ctx.conf, vm, template_path, pool))
    size = max(header.virtual_size, int(disk.get("size") or 0))
    return {
        "cloudstack_id": disk["id"],
        "name": disk["name"],
        "deviceid": disk.get("deviceid"),
        "chain": files,
        "virtual_size": header.virtual_size,
        "size_gib": max(1, math.ceil(size / GiB)),
        **typed(ctx, disk),
        "internal_snapshots": header.snapshots,
        "format": "qcow2",
    }


def _plan_rbd_disk(ctx, disk):
    """A disk on RBD primary storage: a raw image (a clone of its
    template's snapshot), read whole as the guest sees it by the agent's
    rbd transport (cold), or mirrored whole from the running domain's
    network disk (warm: warmdisks.py); its size is CloudStack's (only
    agents need Ceph credentials, not the conductor)."""
    size = int(disk.get("size") or 0)
    if size <= 0:
        raise exception.Invalid(
            reason="CloudStack gives data disk %s (%s) no size"
            % (disk["name"], disk["id"]))
    return {
        "cloudstack_id": disk["id"],
        "name": disk["name"],
        "deviceid": disk.get("deviceid"),
        "chain": [sources.rbd_source(disk["storage"], disk["path"])],
        "virtual_size": size,
        "size_gib": max(1, math.ceil(size / GiB)),
        **typed(ctx, disk),
        "internal_snapshots": 0,
        "format": "raw",
    }


def volume_type(ctx, disk):
    """The Cinder volume type of ``disk``'s volume; None: Cinder's
    default."""
    return typed(ctx, disk)["volume_type"]


def typed(ctx, disk):
    """{volume_type, volume_type_chosen_by}: the request's
    ``volume_type``; else the request's volume_type_map, then
    [cloudstack] volume_type_map's entry for the disk offering (id, then
    name) or the storage pool (id, then name); else None: Cinder's
    default type."""
    options = ctx.migration["options"] or {}
    if options.get("volume_type"):
        return {"volume_type": options["volume_type"],
                "volume_type_chosen_by": "request"}
    pool = disk.get("storage") or {}
    found = maps.choose(ctx, "volume_type_map", (
        disk.get("diskofferingid"), disk.get("diskofferingname"),
        pool.get("id"), pool.get("name")))
    if found is None:
        return {"volume_type": None,
                "volume_type_chosen_by": "Cinder's default"}
    name, key, where = found
    return {"volume_type": name,
            "volume_type_chosen_by": "%s (%s)" % (where, key)}


def _check_types(ctx, planned):
    checked = set()
    for disk in planned:
        name = disk["volume_type"]
        if not name or name in checked:
            continue
        checked.add(name)
        if not ctx.volumes.volume_type_exists(name):
            by = disk.get("volume_type_chosen_by")
            raise exception.Invalid(
                reason="Cinder has no volume type %s (named by the %s)"
                % (name, "request's volume_type" if by == "request"
                   else by))


def _check_quota(ctx, vm, planned):
    gigabytes, count = ctx.volumes.headroom()
    need = sum(d["size_gib"] for d in planned)
    problems = []
    if gigabytes is not None and need > gigabytes:
        problems.append("%d GiB (%s) but the quota leaves %d GiB" % (
            need, ", ".join("%s: %d GiB" % (d["name"], d["size_gib"])
                            for d in planned), gigabytes))
    if count is not None and len(planned) > count:
        problems.append("%d volumes but the quota leaves %d"
                        % (len(planned), count))
    if problems:
        raise exception.Invalid(
            reason="the data disks of CloudStack VM %s need %s in project "
            "%s's Cinder quota; raise the quota or free space there"
            % (vm["name"], " and ".join(problems),
               ctx.migration.get("target_project_id")))


def volumes(ctx):
    """Create the volumes (or find an earlier attempt's) and attach them
    to the stopped server, in device id order."""
    planned = ctx.resources.get("data_disks") or []
    if not planned:
        return
    client = ctx.volumes
    server_id = ctx.resources["server_id"]
    vm = ctx.migration["source"]
    made = {v["cloudstack_id"]: v["volume_id"]
            for v in ctx.resources.get("volumes") or []}
    found = client.find_volumes(ctx.id)
    for disk in planned:
        volume = found.get(disk["cloudstack_id"])
        if volume is None:
            ctx.guard()
            volume = client.create_volume(
                "%s-%s" % (vm["name"], disk["name"]), disk["size_gib"],
                disk["volume_type"], ctx.id, disk["cloudstack_id"],
                "cs2os migration %s: CloudStack data disk %s (%s) of VM %s"
                % (ctx.id, disk["name"], disk["cloudstack_id"], vm["name"]))
        made[disk["cloudstack_id"]] = volume.id
        # Recorded before relying on it: a rollback deletes it.
        ctx.resource(volumes=[
            {"cloudstack_id": d["cloudstack_id"],
             "volume_id": made[d["cloudstack_id"]]}
            for d in planned if d["cloudstack_id"] in made])
    for disk in planned:
        # Creating (available next), or an attachment an earlier attempt
        # asked for (reserved or attaching: in-use next).
        volume = client.get_volume(made[disk["cloudstack_id"]])
        if volume is not None and volume.status not in ("available",
                                                        "in-use"):
            client.wait_volume(volume.id, ("available", "in-use"))
    attached = client.attached_volumes(server_id)
    for disk in planned:  # device order: the guest's order
        volume_id = made[disk["cloudstack_id"]]
        if volume_id not in attached:
            ctx.guard()
            client.attach(server_id, volume_id)
    ctx.event("volumes", "%d Cinder volume(s) attached to server %s: %s"
              % (len(planned), server_id, ", ".join(
                  "%s -> %s" % (d["name"], made[d["cloudstack_id"]])
                  for d in planned)))


def sync(ctx):
    """The agent writes every data disk into its volume, in order."""
    planned = ctx.resources.get("data_disks") or []
    if not planned:
        return
    made = {v["cloudstack_id"]: v["volume_id"]
            for v in ctx.resources.get("volumes") or []}
    results = []
    for disk in planned:
        volume_id = made[disk["cloudstack_id"]]
        answer = agentcall.call_waiting(
            ctx, "sync_volumes", "sync_volume", ctx.id,
            ctx.resources["server_id"], volume_id, disk["chain"],
            disk.get("format", "qcow2"))
        results.append({
            "cloudstack_id": disk["cloudstack_id"], "name": disk["name"],
            "volume_id": volume_id, "volume_size_gib": disk["size_gib"],
            "volume_type": disk["volume_type"],
            "volume_type_chosen_by": disk.get("volume_type_chosen_by"),
            "target_dev": answer.get("target_dev"),
            "files": answer.get("files"),
            "bytes_copied": answer.get("bytes_copied"),
            "virtual_size": answer.get("virtual_size"),
            "verified": bool(answer.get("verified")),
            "seconds": answer.get("seconds"),
        })
        ctx.result(data_disks=results)


def undo(ctx):
    """Before the commit, once the server is gone: delete the volumes this
    migration made (by record and by metadata)."""
    resources = ctx.resources
    if ctx.committed or resources.get("server_id"):
        return None
    if not resources.get("data_disks") and not resources.get("volumes"):
        return None
    client = ctx.volumes
    ids = {v["volume_id"] for v in resources.get("volumes") or []}
    ids |= {v.id for v in client.find_volumes(ctx.id).values()}
    deleted = []
    for volume_id in sorted(ids):
        ctx.guard()
        if client.delete_volume(volume_id):
            deleted.append(volume_id)
    ctx.resource(volumes=[])
    return ("deleted volumes %s" % ", ".join(deleted)) if deleted else None
