"""A warm migration's mirror: validate the source, mirror, ready, finish.

With data disks, each is mirrored in full into its Cinder volume next to
the root's mirror, and the steps here watch every job as one
(conductor/flow/warmdisks.py).

The agent exports a fresh overlay T on Nova's base D (after proving D == B);
libvirt's shallow block copy on the CloudStack KVM host writes the source's
top layer A into it with synchronous writes, and the steps here watch the
job (and the agent's target) until READY, hold it READY for a manual
cutover, and after the cutover have the agent close and stage T.
"""

import time

from cs2os_agent import virt
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import datadisks
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import warmdisks
from cs2os_agent.conductor.flow import window
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import kvmhost
from cs2os_agent.sourcehost import multicopy

# How often a waiting step asks the agent whether its daemon and tunnel
# still live: a dead tunnel fails no job until the guest writes.
AGENT_CHECK_INTERVAL = 5.0
BUSY_POLL = 5
MiB = 1024 * 1024


def validate(ctx):
    """The cold checks, then what a mirror needs: the VM runs, its domain
    runs on the KVM host, its root disk and QEMU's DAC owner are known,
    and no one else's block job runs on that disk."""
    prepare.validate(ctx)
    check_source(ctx)


def check_source(ctx):
    """What a mirror needs of the source (after prepare.validate): the VM
    runs, its domain runs on the KVM host, its root disk and QEMU's DAC
    owner are known, and no one else's block job runs on that disk; the
    live flow (live.py) checks its own refusals in between."""
    vm = ctx.migration["source"]
    if vm["state"] != "Running":
        raise exception.Invalid(
            reason="CloudStack VM %s is %s: a warm migration mirrors a "
            "running VM (use mode cold)" % (vm["name"], vm["state"]))
    host = (vm.get("host") or {}).get("ipaddress")
    if not host:
        raise exception.Invalid(
            reason="CloudStack does not say which host runs VM %s (listHosts "
            "answers root admins only)" % vm["name"])
    volume = vm["root_volume"]
    with kvmhost.connect(ctx.conf, host) as kvm:
        dom = kvm.domain(vm["instancename"])
        state = virt.state(dom)
        if state != virt.RUNNING:
            raise exception.Invalid(
                reason="domain %s of CloudStack VM %s is %s on %s"
                % (vm["instancename"], vm["name"], state, kvm.name))
        disk = kvmhost.root_disk(dom, volume["storage"]["id"],
                                 volume["path"])
        owner = blockcopy.qemu_owner(dom)
        if owner is None:
            raise exception.Invalid(
                reason="domain %s names no DAC user for its QEMU; the "
                "mirror's socket could not be handed to it"
                % vm["instancename"])
        _require_no_foreign_job(ctx, dom, disk)
        warm_disks = warmdisks.locate(ctx, dom, vm)
    ctx.resource(kvm_host=host, source_domain=vm["instancename"],
                 source_disk=disk, socket_owner=owner,
                 warm_disks=warm_disks)


def _require_no_foreign_job(ctx, dom, disk):
    # A job of our own (an earlier attempt) is ended by the mirror step;
    # anyone else's (CloudStack moving the volume, an operator) is theirs.
    if blockcopy.BlockCopy(dom, disk).status().active and \
            kvmhost.mirror_export(dom, disk) != export(ctx):
        raise exception.Invalid(
            reason="another block job runs on disk %s of domain %s"
            % (disk, dom.name()))


def export(ctx):
    """The NBD export the agent serves for this migration."""
    # The agent names its export after the migration (the same function).
    return nbd.export_name(ctx.id)


def job_of(ctx, dom):
    """The block copy of the source's root disk; with data disks, every
    disk's copy as one JobSet (sourcehost/multicopy.py)."""
    return warmdisks.job_of(
        ctx, dom, blockcopy.BlockCopy(dom, ctx.resources["source_disk"]),
        export(ctx))


def is_ours(ctx, dom, job):
    """A job runs, and into this migration's export (with data disks:
    any of them)."""
    if isinstance(job, multicopy.JobSet):
        return job.any_ours()
    return (job.status().active
            and kvmhost.mirror_export(dom, job.disk) == export(ctx))


def is_whole(ctx, dom, job):
    """Every job of this migration runs, each into its export."""
    if isinstance(job, multicopy.JobSet):
        return job.all_ours()
    return is_ours(ctx, dom, job)


def mirror(ctx):
    """Prepare T on the agent, start the shallow block copy into it and
    wait until READY with nothing left to copy.  With data disks: their
    volumes first (attached to the stopped server), then a target per
    volume and a full copy per disk next to the root's."""
    res = ctx.resources
    datadisks.volumes(ctx)  # none without data disks
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        dom = kvm.domain(res["source_domain"])
        state = virt.state(dom)
        if state != virt.RUNNING:
            raise exception.Invalid(
                reason="the CloudStack VM's domain %s is %s, not running"
                % (res["source_domain"], state))
        job = job_of(ctx, dom)
        if is_ours(ctx, dom, job):
            # An earlier attempt's job (conductor restart): the mirror
            # starts afresh, on a fresh T.
            job.cancel()
            ctx.event("mirror", "ended the block copy of an earlier attempt")
        desc = _prepare(ctx)
        volume_dests = warmdisks.prepare(ctx)
        job = job_of(ctx, dom)  # the volumes' exports are known now
        ctx.resource(mirror={
            "export": desc["export"], "target_path": desc["target_path"],
            "nbd_socket": desc["nbd"]["socket"], "qsd_pid": desc["qsd_pid"],
            "tunnel_pid": desc["tunnel_pid"]}, mirror_ready=False,
            # An earlier attempt's cutover says nothing about this mirror.
            cutover_started=None, cutover_method=None, cutover_done=False,
            source_down_at=None,
            source_stop_job=None)
        ctx.event("mirror", "D == B proven on %s (%s); T exported as %s"
                  % (res["host"], desc["base_proof"].get("method"),
                     desc["export"]))
        bandwidth = ctx.conf.conductor.mirror_max_bandwidth_mbps * 125000
        # From here on the record's progress is the job's (not the image's).
        ctx.progress({"bytes_done": 0, "bytes_total": 0, "rate_bps": 0})
        ctx.resource(mirror_started=True)  # before: rollback ends it
        with blockcopy.JobEvents(kvm.conn, dom) as events:
            started = time.monotonic()
            job.start([desc["dest_xml"]] + volume_dests if volume_dests
                      else desc["dest_xml"], bandwidth=bandwidth or None)
            status = wait(ctx, job, "mirror", is_ready,
                           ctx.conf.conductor.mirror_ready_timeout,
                           sleep=events.sleep)
    # Seen READY when libvirt reports it (or one poll interval late).
    seconds = time.monotonic() - started
    ctx.mirror_watched = True
    ctx.resource(mirror_ready=True)
    ctx.result(mirror={"bytes": status.end, "seconds": round(seconds, 3),
                       "rate_bps": int(status.end / seconds) if seconds
                       else None})
    ctx.event("mirror", "READY: %.1f MiB copied in %.1f s; every guest "
              "write now lands on both sides" % (status.end / MiB, seconds))


def _prepare(ctx):
    res = ctx.resources
    source = {"transport": "ssh", "host": res["kvm_host"],
              "port": ctx.conf.cloudstack.kvm_ssh_port,
              "virtual_size": res["overlay_virtual_size"],
              "socket_owner": res["socket_owner"],
              "base_proof": res["base_proof"]}
    if ctx.conf.cloudstack.kvm_ssh_user:
        source["user"] = ctx.conf.cloudstack.kvm_ssh_user
    ctx.resource(mirror_prepared=True)  # before: rollback aborts it
    while True:
        try:
            return ctx.clients.agent.prepare_mirror(
                ctx.admin_context, res["host"], ctx.id, res["server_id"],
                source)
        except exception.MigrationBusy as exc:
            # Our own earlier call, still running on the agent after a
            # conductor restart: wait for it, then prepare afresh.
            if exc.kwargs.get("owner") != ctx.id:
                raise
            ctx.check_cancelled("mirror")
            time.sleep(BUSY_POLL)


def is_ready(ctx, status):
    """READY, with nothing left to copy."""
    return status.ready and status.cur == status.end


def wait(ctx, job, step, done, timeout, sleep=time.sleep):
    """Poll the job until ``done(ctx, status)``; record progress.

    Fails on a cancel request, a job that ended by itself, a target the
    agent reports dead, or ``timeout`` seconds (0: none).  ``sleep`` waits
    between polls (JobEvents.sleep also returns on the job's events).
    """
    started = time.monotonic()
    progress = _Progress(ctx)
    next_check = started
    while True:
        ctx.check_cancelled(step)
        status = check_job(ctx, job)
        progress.record(status)
        if done(ctx, status):
            return status
        now = time.monotonic()
        if now >= next_check:
            check_target(ctx)
            next_check = now + AGENT_CHECK_INTERVAL
        if timeout and now - started > timeout:
            if step == "mirror":
                raise mirror_errors.BlockCopyTimeout(
                    domain=job.name, disk=job.disk, timeout=timeout,
                    cur=status.cur, end=status.end)
            raise mirror_errors.MirrorError(
                reason="no cutover was requested within %s s ([conductor] "
                "manual_cutover_timeout)" % timeout)
        sleep(ctx.conf.conductor.mirror_poll_interval)


def check_job(ctx, job):
    """The job's status; a failed job's error names the agent's reason."""
    try:
        return job.check()
    except mirror_errors.BlockCopyFailed as exc:
        # The agent usually knows why (daemon or tunnel died): say it.
        reason = target_error(ctx)
        if reason:
            raise mirror_errors.MirrorError(
                reason="%s; on the agent: %s" % (exc.message, reason)
            ) from None
        raise


def target_error(ctx):
    """Why the agent's target is not exporting, or None."""
    try:
        status = ctx.clients.agent.mirror_status(
            ctx.admin_context, ctx.resources["host"], ctx.id)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return exception.describe(exc)
    if status.get("state") != "exporting":
        return status.get("error") or "target %s" % status.get("state")
    return warmdisks.target_error(ctx)


def check_target(ctx):
    """Fail if the agent's target is no longer exporting."""
    reason = target_error(ctx)
    if reason:
        raise mirror_errors.MirrorError(
            reason="the mirror target on %s failed: %s"
            % (ctx.resources["host"], reason))


class _Progress:
    """cur/end of the job into the record, with a rate."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.last = None  # (monotonic, cur)
        self.rate = 0

    def record(self, status):
        now = time.monotonic()
        if self.last is not None and now > self.last[0] \
                and status.cur >= self.last[1]:
            self.rate = int((status.cur - self.last[1])
                            / (now - self.last[0]))
        self.last = (now, status.cur)
        m = self.ctx.migration
        if (m["bytes_done"], m["bytes_total"]) != (status.cur, status.end) \
                or m["rate_bps"] != self.rate:
            self.ctx.progress({"bytes_done": status.cur,
                               "bytes_total": status.end,
                               "rate_bps": self.rate})


def attach(ctx, dom, job):
    """The job to cut over: the one this run watched, still whole; or,
    after a conductor restart, the one found whole, else a fresh one."""
    if ctx.mirror_watched:
        # This run watched it reach READY: a failure since is one.
        check_job(ctx, job)
        check_target(ctx)
        return job
    if is_whole(ctx, dom, job) and target_error(ctx) is None:
        ctx.mirror_watched = True
        return job
    # A restarted conductor (or another one) resumes here and the mirror
    # it did not watch is no longer whole: start it again.
    ctx.event(ctx.migration["step"], "the mirror did not survive the "
              "conductor restart; starting it again")
    mirror(ctx)
    return job_of(ctx, dom)


def ready(ctx):
    """READY: every guest write lands on both sides.  With cutover
    "manual", stay so until the operator's cutover action."""
    res = ctx.resources
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        dom = kvm.domain(res["source_domain"])
        job = attach(ctx, dom, job_of(ctx, dom))
        window.hold(ctx, job)
        if (ctx.migration["options"] or {}).get("cutover") != states.MANUAL \
                or cutover_requested(ctx):
            return
        ctx.event("ready", "holding the mirror READY until a cutover is "
                  "requested (openstack cs2os migration cutover %s)"
                  % ctx.id)
        wait(ctx, job, "ready", lambda c, status: cutover_requested(c),
              ctx.conf.conductor.manual_cutover_timeout)


def cutover_requested(ctx):
    """The operator asked for the cutover (on any conductor)."""
    # The request may reach another conductor: the record says.
    options = ctx.db.get_migration(ctx.id)["options"] or {}
    return bool(options.get("cutover_requested"))


def finish(ctx):
    """After the cutover: the agent closes T, checks it and stages it."""
    res = ctx.resources
    result = ctx.clients.agent.finish_mirror(
        ctx.admin_context, res["host"], ctx.id, res["server_id"])
    ctx.resource(mirror_finished=True)
    ctx.result(sync=result)
    warmdisks.finish(ctx)


def undo_target(ctx):
    """Before the commit: the agent removes its mirror targets (the
    root's T, and every data disk's)."""
    res = ctx.resources
    done = [warmdisks.undo_targets(ctx)]
    if ctx.committed or not res.get("mirror_prepared") \
            or not res.get("server_id"):
        return done[0]
    answer = ctx.clients.agent.abort_mirror(
        ctx.admin_context, res["host"], ctx.id, res["server_id"])
    ctx.resource(mirror_prepared=False)
    if answer.get("aborted"):
        done.append("removed the mirror target on %s" % res["host"])
    return "; ".join(x for x in done if x) or None
