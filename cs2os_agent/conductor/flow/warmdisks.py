"""A warm migration's data disks: mirrored into their Cinder volumes.

Without data disks none of this runs and a warm migration is what it
was.  With them, every step of the warm flow takes all disks at once:

validate  locate    each data disk's target in the source domain (vdb...):
                    a file /mnt/<pool>/<path>, or on RBD primary storage
                    the network disk rbd <Ceph pool>/<image> (QEMU reads
                    either; the copy is of the guest view, so a raw RBD
                    clone arrives whole, its template's data with it);
                    no one else's job on it.  (An RBD root volume is still
                    refused for warm: rootdisk.py.)
mirror    (first)   the volumes (datadisks.volumes: created, attached
                    through Nova to the stopped server, device order),
          prepare   then one agent target per volume (it writes straight
                    into the volume, agent/mirror/volumemirror.py), and
          job_of    one FULL block copy per data disk next to the root's
                    shallow one: a JobSet, READY only when every job is
cutover             the JobSet's: one shutdown proven for every job
                    (sourceend counts them), or one suspend and every job
                    ended (force)
finish    finish    the agent closes each volume (every write on it)
rollback  undo      every job ended (cutover.undo_job), every target
                    aborted here, the volumes deleted after the server
                    (datadisks.undo); the source runs on its own disks
"""

import time

import libvirt

from cs2os_agent.cloudstack import discovery
from cs2os_agent.common import exception
from cs2os_agent.common import nbd
from cs2os_agent.conductor.flow import datadisks
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import kvmhost
from cs2os_agent.sourcehost import multicopy

BUSY_POLL = 5


def locate(ctx, dom, vm):
    """Each planned data disk's target in the source domain, device order
    (the ``warm_disks`` resource); refused if someone else's block job
    runs on one (ours, of an earlier attempt, the mirror step ends)."""
    planned = ctx.resources.get("data_disks") or []
    ours = {export(ctx, v) for v in _volume_ids(ctx).values()}
    by_id = {d["id"]: d for d in vm.get("datadisks") or []}
    found = []
    for disk in planned:
        source = by_id.get(disk["cloudstack_id"])
        if source is None:
            raise exception.Invalid(
                reason="CloudStack no longer lists data disk %s of VM %s"
                % (disk["name"], vm["name"]))
        dev = _target(dom, source)
        if blockcopy.BlockCopy(dom, dev).status().active and \
                kvmhost.mirror_export(dom, dev) not in ours:
            raise exception.Invalid(
                reason="another block job runs on disk %s of domain %s"
                % (dev, dom.name()))
        found.append({"cloudstack_id": disk["cloudstack_id"],
                      "name": disk["name"], "dev": dev,
                      "virtual_size": _size(dom, dev, disk)})
    return found


def _target(dom, source):
    pool = source["storage"]
    if pool.get("type") == discovery.RBD:
        return kvmhost.rbd_disk(dom, pool["path"], source["path"])
    return kvmhost.root_disk(dom, pool["id"], source["path"])


def _size(dom, dev, disk):
    """The size the volume's export must have: QEMU's mirror refuses a
    target of another size than the source disk.  A qcow2 file's is its
    header's (read at plan); an RBD disk's is CloudStack's, so the
    running domain's own capacity is taken, if the volume holds it."""
    if disk.get("format") != "raw":
        return disk["virtual_size"]
    try:
        capacity = dom.blockInfo(dev, 0)[0]
    except libvirt.libvirtError as exc:
        raise exception.Invalid(
            reason="domain %s does not give the size of disk %s: %s"
            % (dom.name(), dev, exc.get_error_message())) from None
    if capacity > disk["size_gib"] * datadisks.GiB:
        raise exception.Invalid(
            reason="data disk %s is %d bytes in domain %s, more than its "
            "%d GiB volume (CloudStack says %d bytes)"
            % (disk["name"], capacity, dom.name(), disk["size_gib"],
               disk["virtual_size"]))
    return capacity


def export(ctx, volume_id):
    """The NBD export the agent serves for one data disk's volume (the
    agent names it the same way, agent/mirror/volumemirror.py)."""
    return nbd.export_name("%s/%s" % (ctx.id, volume_id))


def _volume_ids(ctx):
    return {v["cloudstack_id"]: v["volume_id"]
            for v in ctx.resources.get("volumes") or []}


def job_of(ctx, dom, root_job, root_export):
    """The root's job alone (no data disks), or every disk's as one."""
    disks = ctx.resources.get("warm_disks") or []
    if not disks:
        return root_job
    ids = _volume_ids(ctx)
    copies = [(root_job, root_export)]
    for disk in disks:
        volume_id = ids.get(disk["cloudstack_id"])
        copies.append((blockcopy.BlockCopy(dom, disk["dev"], shallow=False),
                       export(ctx, volume_id) if volume_id else None))
    return multicopy.JobSet(dom, copies)


def prepare(ctx):
    """One agent target per data disk, writing into its volume; the
    destinations (libvirt XML) in device order."""
    disks = ctx.resources.get("warm_disks") or []
    if not disks:
        return []
    res = ctx.resources
    ids = _volume_ids(ctx)
    # Before the calls: a rollback aborts whatever the agent may hold.
    ctx.resource(volume_mirrors=[
        {"cloudstack_id": d["cloudstack_id"], "dev": d["dev"],
         "volume_id": ids[d["cloudstack_id"]]} for d in disks])
    mirrors, dests = [], []
    for disk in disks:
        volume_id = ids[disk["cloudstack_id"]]
        source = {"transport": "ssh", "host": res["kvm_host"],
                  "port": ctx.conf.cloudstack.kvm_ssh_port,
                  "virtual_size": disk["virtual_size"],
                  "socket_owner": res["socket_owner"]}
        if ctx.conf.cloudstack.kvm_ssh_user:
            source["user"] = ctx.conf.cloudstack.kvm_ssh_user
        desc = _call_busy(ctx, "prepare_volume_mirror", volume_id, source)
        mirrors.append({
            "cloudstack_id": disk["cloudstack_id"], "dev": disk["dev"],
            "volume_id": volume_id, "export": desc["export"],
            "nbd_socket": desc["nbd"]["socket"], "qsd_pid": desc["qsd_pid"],
            "tunnel_pid": desc["tunnel_pid"],
            "target_dev": desc.get("target_dev")})
        dests.append(desc["dest_xml"])
        ctx.resource(volume_mirrors=mirrors + [
            {"cloudstack_id": d["cloudstack_id"], "dev": d["dev"],
             "volume_id": ids[d["cloudstack_id"]]}
            for d in disks[len(mirrors):]])
    ctx.event("mirror", "%d data disk(s) exported for their mirrors: %s"
              % (len(mirrors), ", ".join(
                  "%s -> volume %s" % (m["dev"], m["volume_id"])
                  for m in mirrors)))
    return dests


def _call_busy(ctx, method, volume_id, source):
    res = ctx.resources
    while True:
        try:
            return getattr(ctx.clients.agent, method)(
                ctx.admin_context, res["host"], ctx.id, res["server_id"],
                volume_id, source)
        except exception.MigrationBusy as exc:
            # Our own earlier call, still running on the agent after a
            # conductor restart: wait for it, then prepare afresh.
            if exc.kwargs.get("owner") != ctx.id:
                raise
            ctx.check_cancelled("mirror")
            time.sleep(BUSY_POLL)


def target_error(ctx):
    """Why one of the data disks' targets is not exporting, or None."""
    res = ctx.resources
    for mirror in res.get("volume_mirrors") or []:
        try:
            status = ctx.clients.agent.volume_mirror_status(
                ctx.admin_context, res["host"], ctx.id, mirror["volume_id"])
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return "volume %s: %s" % (mirror["volume_id"],
                                      exception.describe(exc))
        if status.get("state") != "exporting":
            return "volume %s: %s" % (
                mirror["volume_id"],
                status.get("error") or "target %s" % status.get("state"))
    return None


def finish(ctx):
    """After the cutover: the agent closes every volume."""
    res = ctx.resources
    mirrors = res.get("volume_mirrors") or []
    if not mirrors:
        return
    results = []
    for mirror in mirrors:
        answer = ctx.clients.agent.finish_volume_mirror(
            ctx.admin_context, res["host"], ctx.id, res["server_id"],
            mirror["volume_id"])
        results.append({"cloudstack_id": mirror["cloudstack_id"],
                        "volume_id": mirror["volume_id"],
                        "dev": mirror["dev"],
                        "target_dev": answer.get("target_dev"),
                        "virtual_size": answer.get("virtual_size"),
                        "closed_seconds": answer.get("closed_seconds"),
                        "mirrored": True})
    ctx.result(data_disks=results)


def undo_targets(ctx):
    """Before the commit: the agent stops every data disk's target (the
    volumes go with datadisks.undo once the server is gone)."""
    res = ctx.resources
    mirrors = res.get("volume_mirrors") or []
    if ctx.committed or not mirrors or not res.get("server_id"):
        return None
    aborted = []
    for mirror in mirrors:
        ctx.guard()
        ctx.clients.agent.abort_volume_mirror(
            ctx.admin_context, res["host"], ctx.id, res["server_id"],
            mirror["volume_id"])
        aborted.append(mirror["volume_id"])
    ctx.resource(volume_mirrors=[])
    return "removed the mirror targets of volumes %s" % ", ".join(aborted)
