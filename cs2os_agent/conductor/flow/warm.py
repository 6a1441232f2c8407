"""The steps of a warm migration, and how each is undone.

The CloudStack VM runs on while its disk's top layer A is mirrored into a
fresh overlay T on Nova's base D (the agent exports T; libvirt's block copy
on the CloudStack KVM host writes into it: shallow, synchronous writes).
Once the mirror is READY every guest write lands on both sides; the
cutover then freezes the source, ends the job and the flow goes on as the
cold one does from the swap.

validate, image     the cold steps, plus: the VM runs, its domain and root
                    disk on the KVM host, and a digest of the template's
                    guest view (what proves D == B to the agent)
ports, boot         the cold steps
mirror              prepare T on the agent (D == B proven there first),
                    start the block copy, record progress until READY
ready               READY; with cutover "manual" it stays so (progress,
                    failures watched) until the operator's cutover action
cutover             by default "shutdown": with the job READY and nothing
                    left to copy, CloudStack stops the VM (the guest shuts
                    down cleanly, applications flush) while the synchronous
                    mirror keeps every write on both sides; QEMU's events
                    prove the job stayed whole until the domain ended
                    (sourcehost/sourceend.py).  "force", for guests that will
                    not shut down: suspend the source, check the job READY
                    with nothing left to copy, end it without pivot
finish              the agent closes T (durable) and stages it
swap                the cold step
start               Nova starts the server (the downtime ends here)
stop_source         CloudStack stops the VM if still running (forced after
                    a force cutover: it is paused), then destroys it if
                    delete_source

libvirt 9.0's block job events cannot prove the clean cutover: a job
failure shortly before the domain's end is dropped, not delivered
(measured: the target's daemon killed, a guest write that then completed
on the source only, the domain destroyed right after: no FAILED event,
though it came 0.13 s after the write with the domain left running).
QEMU's own BLOCK_JOB_ERROR did arrive, through libvirt's QEMU monitor
event API: the clean cutover rests on those.

The source's disk chain is never written by cs2os: before the Nova server
is started, any failure or cancel resumes (or leaves running) the
CloudStack VM on it, exactly as it was.
"""

import os
import tempfile
import time

from oslo_log import log as logging

from cs2os_agent import guestview
from cs2os_agent import transfer
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd
from cs2os_agent.conductor import request as request_schema
from cs2os_agent.conductor.flow import sources
from cs2os_agent.conductor.flow import steps
from cs2os_agent.openstack import client as os_client
from cs2os_agent.sourcehost import blockcopy
from cs2os_agent.sourcehost import kvmhost
from cs2os_agent.sourcehost import sourceend

LOG = logging.getLogger(__name__)

# Image properties: the template's guest-view digest, recorded once per
# image like the file fingerprint the image step dedups on.
GUEST_DIGEST_KEY = os_client.GUEST_DIGEST_KEY
GUEST_SIZE_KEY = os_client.GUEST_SIZE_KEY
# How often a waiting step asks the agent whether its daemon and tunnel
# still live: a dead tunnel fails no job until the guest writes.
AGENT_CHECK_INTERVAL = 5.0
# A cutover waits this long for a moment with nothing left to copy (a
# guest write in flight makes cur < end for a few milliseconds).
SETTLE_TIMEOUT = 60.0
SETTLE_POLL = 0.02
# CloudStack said the VM stopped: its domain's end event follows within
# this (libvirt reports it once QEMU is reaped).
DOMAIN_END_TIMEOUT = 60.0
BUSY_POLL = 5
MiB = 1024 * 1024


# -- validate, image -------------------------------------------------------


def validate(ctx):
    steps.validate(ctx)
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
        state = kvmhost.domain_state(dom)
        if state != "running":
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
    ctx.resource(kvm_host=host, source_domain=vm["instancename"],
                 source_disk=disk, socket_owner=owner)


def _require_no_foreign_job(ctx, dom, disk):
    # A job of our own (an earlier attempt) is ended by the mirror step;
    # anyone else's (CloudStack moving the volume, an operator) is theirs.
    if blockcopy.BlockCopy(dom, disk).status().active and \
            kvmhost.mirror_export(dom, disk) != _export(ctx):
        raise exception.Invalid(
            reason="another block job runs on disk %s of domain %s"
            % (disk, dom.name()))


def image(ctx):
    """The cold image step, then the template's guest-view digest."""
    steps.image(ctx)
    proof = _template_digest(ctx)
    ctx.resource(base_proof={k: proof[k] for k in
                             ("algorithm", "digest", "virtual_size")})


def _template_digest(ctx):
    openstack = ctx.clients.openstack
    image = openstack.conn.image.get_image(ctx.resources["image_id"])
    props = image.properties or {}
    if props.get(GUEST_DIGEST_KEY) and props.get(GUEST_SIZE_KEY):
        return {"algorithm": guestview.ALGORITHM,
                "digest": props[GUEST_DIGEST_KEY],
                "virtual_size": int(props[GUEST_SIZE_KEY])}
    # Not recorded (an image uploaded before the image step recorded it):
    # read the template once more and record it for the next ones.
    vm = ctx.migration["source"]
    template_source = sources.source_for(ctx.conf, vm,
                                         ctx.resources["template_path"])
    started = time.monotonic()
    with transfer.get_source(template_source, ctx.conf) as src, \
            tempfile.TemporaryDirectory(
                dir=ctx.conf.conductor.image_spool_dir) as spool:
        path = os.path.join(spool, "template.qcow2")
        # The image step's own resumable, throttled copy.
        steps.spool(ctx, src, path)
        proof = guestview.guest_digest(path, "qcow2", spool)
    # By id: given the fetched resource, openstacksdk's patch is refused
    # (409) by Glance.
    openstack.conn.image.update_image(image.id, **{
        GUEST_DIGEST_KEY: proof["digest"],
        GUEST_SIZE_KEY: str(proof["virtual_size"])})
    ctx.result(template_guest_digest=dict(
        proof, seconds=round(time.monotonic() - started, 3)))
    ctx.event("image", "template guest view hashed (%s, %s): %s"
              % (proof["algorithm"], proof["method"], proof["digest"]))
    return proof


# -- mirror ------------------------------------------------------------------


def _export(ctx):
    # The agent names its export after the migration (the same function).
    return nbd.export_name(ctx.id)


def _job(ctx, dom):
    return blockcopy.BlockCopy(dom, ctx.resources["source_disk"])


def _ours(ctx, dom, job):
    return (job.status().active
            and kvmhost.mirror_export(dom, job.disk) == _export(ctx))


def mirror(ctx):
    res = ctx.resources
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        dom = kvm.domain(res["source_domain"])
        state = kvmhost.domain_state(dom)
        if state != "running":
            raise exception.Invalid(
                reason="the CloudStack VM's domain %s is %s, not running"
                % (res["source_domain"], state))
        job = _job(ctx, dom)
        if _ours(ctx, dom, job):
            # An earlier attempt's job (conductor restart): the mirror
            # starts afresh, on a fresh T.
            job.cancel()
            ctx.event("mirror", "ended the block copy of an earlier attempt")
        desc = _prepare(ctx)
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
            job.start(desc["dest_xml"], bandwidth=bandwidth or None)
            status = _wait(ctx, job, "mirror", _ready,
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


def _ready(ctx, status):
    return status.ready and status.cur == status.end


def _wait(ctx, job, step, done, timeout, sleep=time.sleep):
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
        status = _check_job(ctx, job)
        progress.record(status)
        if done(ctx, status):
            return status
        now = time.monotonic()
        if now >= next_check:
            _check_target(ctx)
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


def _check_job(ctx, job):
    try:
        return job.check()
    except mirror_errors.BlockCopyFailed as exc:
        # The agent usually knows why (daemon or tunnel died): say it.
        reason = _target_error(ctx)
        if reason:
            raise mirror_errors.MirrorError(
                reason="%s; on the agent: %s" % (exc.message, reason)
            ) from None
        raise


def _target_error(ctx):
    try:
        status = ctx.clients.agent.mirror_status(
            ctx.admin_context, ctx.resources["host"], ctx.id)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return exception.describe(exc)
    if status.get("state") != "exporting":
        return status.get("error") or "target %s" % status.get("state")
    return None


def _check_target(ctx):
    reason = _target_error(ctx)
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


# -- cutover -----------------------------------------------------------------


def _attach(ctx, dom, job):
    """The job to cut over: the one this run watched, still whole; or,
    after a conductor restart, the one found whole, else a fresh one."""
    if ctx.mirror_watched:
        # This run watched it reach READY: a failure since is one.
        _check_job(ctx, job)
        _check_target(ctx)
        return job
    if _ours(ctx, dom, job) and _target_error(ctx) is None:
        ctx.mirror_watched = True
        return job
    # A restarted conductor (or another one) resumes here and the mirror
    # it did not watch is no longer whole: start it again.
    ctx.event(ctx.migration["step"], "the mirror did not survive the "
              "conductor restart; starting it again")
    mirror(ctx)
    return _job(ctx, dom)


def ready(ctx):
    """READY: every guest write lands on both sides.  With cutover
    "manual", stay so until the operator's cutover action."""
    res = ctx.resources
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        dom = kvm.domain(res["source_domain"])
        job = _attach(ctx, dom, _job(ctx, dom))
        if (ctx.migration["options"] or {}).get("cutover") != "manual" \
                or _cutover_requested(ctx):
            return
        ctx.event("ready", "holding the mirror READY until a cutover is "
                  "requested (openstack cs2os migration cutover %s)"
                  % ctx.id)
        _wait(ctx, job, "ready", lambda c, status: _cutover_requested(c),
              ctx.conf.conductor.manual_cutover_timeout)


def cutover(ctx):
    res = ctx.resources
    if res.get("cutover_done"):
        return
    if res.get("cutover_started") and \
            res.get("cutover_method") == "shutdown":
        raise mirror_errors.BlockCopyFailed(
            domain=res["source_domain"], disk=res["source_disk"],
            reason="the conductor stopped during a clean cutover: the QEMU "
            "events that prove the target complete went with it")
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        dom = kvm.domain(res["source_domain"])
        job = _job(ctx, dom)
        if res.get("cutover_started"):
            _finish_interrupted_cutover(ctx, dom, job)
            return
        job = _attach(ctx, dom, job)
        method = cutover_method(ctx)
        if method == "force":
            timings = _freeze_and_end(ctx, dom, job)
        else:
            timings = _shut_down(ctx, kvm, dom, job)
    ctx.resource(cutover_done=True)
    ctx.result(cutover=timings)
    if method == "force":
        ctx.event("cutover", "source frozen, job ended in %.1f ms (suspend "
                  "%.1f ms, end job %.1f ms)" % (
                      timings["total"] * 1000, timings["suspend"] * 1000,
                      timings["abort"] * 1000))
    else:
        ctx.event("cutover", "CloudStack stops VM %s (%s); QEMU's events "
                  "prove the mirror whole (%s) %.2f s after the stop "
                  "request" % (
                      ctx.migration["source_vm_name"],
                      "clean guest shutdown" if timings["guest_shutdown"]
                      else "the guest did not shut down: its QEMU was ended "
                      "by the host, crash-consistent",
                      timings["proven_by"], timings["decided"]))


def cutover_method(ctx):
    """``shutdown`` (default) or ``force``: the operator's cutover action
    may say, else the request."""
    return request_schema.effective_cutover_method(
        ctx.db.get_migration(ctx.id)["options"])


def _settled(ctx, job):
    """Wait for READY with nothing left to copy (a guest write in flight
    makes cur < end for a few milliseconds)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        ctx.check_cancelled("cutover")
        status = _check_job(ctx, job)
        if _ready(ctx, status):
            return status
        if time.monotonic() > deadline:
            raise mirror_errors.BlockCopyFailed(
                domain=job.name, disk=job.disk,
                reason="the job never had nothing left to copy within %d s "
                "(%d of %d bytes)" % (SETTLE_TIMEOUT, status.cur,
                                      status.end))
        time.sleep(SETTLE_POLL)


def _shut_down(ctx, kvm, dom, job):
    """CloudStack stops the VM; the target is taken only if QEMU's events
    prove the job whole until it ended after the guest's shutdown.

    CloudStack's stop job runs on: it ends when libvirt has reaped QEMU,
    1-2 s after the proof; stop_source waits for it.
    """
    cs = ctx.clients.cloudstack
    vm_id = ctx.migration["source_vm_id"]
    with sourceend.SourceEndWatch(kvm.conn, dom, job.disk) as watch:
        # Watched from before this check: nothing after it goes unseen.
        _settled(ctx, job)
        _check_target(ctx)
        # Recorded first: a rollback starts the VM again.
        ctx.resource(cutover_started=time.time(), cutover_method="shutdown",
                     source_stopped=True)
        t0 = time.monotonic()
        job_id = cs.stop_vm_async(vm_id)
        ctx.resource(source_stop_job=job_id)
        _wait_decided(ctx, cs, job_id, watch, kvm)
        decided = time.monotonic() - t0
        verdict = watch.verdict()
    ctx.resource(source_down_at=verdict["down_at"])
    return {"method": "shutdown", "decided": round(decided, 3),
            "guest_shutdown": verdict["guest_shutdown"],
            "shutdown_reason": verdict["reason"],
            "proven_by": verdict["ended"]}


def _wait_decided(ctx, cs, job_id, watch, kvm):
    """Until QEMU's events decide; the guest takes the time it takes and
    CloudStack decides when to destroy it.  A failed stop job fails."""
    vm = ctx.migration["source_vm_name"]
    deadline = time.monotonic() + cs.job_timeout
    stopped = False
    while not watch.wait_decided(cs.job_poll_interval):
        if not stopped:
            try:
                stopped = cs.poll_job(job_id, "stopVirtualMachine",
                                      vm) is not None
            except cloudstack_errors.CloudStackUnreachable as exc:
                LOG.warning("Still waiting for CloudStack job %s: %s",
                            job_id, exc)
            if stopped:
                # Libvirt reports the domain's end soon after CloudStack.
                deadline = time.monotonic() + DOMAIN_END_TIMEOUT
        if time.monotonic() > deadline:
            raise mirror_errors.BlockCopyFailed(
                domain=watch.name, disk=watch.disk,
                reason="CloudStack %s VM %s, but its domain did not end on "
                "%s" % ("stopped" if stopped else "did not stop", vm,
                        kvm.name))


def _cutover_requested(ctx):
    # The request may reach another conductor: the record says.
    options = ctx.db.get_migration(ctx.id)["options"] or {}
    return bool(options.get("cutover_requested"))


def _freeze_and_end(ctx, dom, job):
    """Suspend the source and end the job when nothing is left to copy."""
    while True:
        _settled(ctx, job)
        _check_target(ctx)
        # Recorded first: a rollback resumes what this suspends.
        suspended_at = time.time()
        ctx.resource(cutover_started=suspended_at, cutover_method="force",
                     source_suspended=True)
        try:
            timings = job.cutover()
        except mirror_errors.BlockCopyFailed:
            # Refused before it suspended (a write raced the check): the
            # source runs on, the job is whole; try again.
            if kvmhost.domain_state(dom) == "running" and \
                    job.status().active:
                ctx.resource(cutover_started=None, source_suspended=False)
                continue
            raise
        ctx.resource(source_down_at=suspended_at)
        return dict(timings, method="force")


def _finish_interrupted_cutover(ctx, dom, job):
    """A conductor died mid-cutover: finish it only if provably exact.

    Exact when the source is still frozen and the job still READY: QEMU
    drained the guest's writes at the suspend and the job lost none.
    Otherwise nobody can tell; the migration fails and the rollback
    resumes the source.
    """
    status = job.status()
    state = kvmhost.domain_state(dom)
    if state != "paused" or not status.active or not status.ready:
        raise mirror_errors.BlockCopyFailed(
            domain=job.name, disk=job.disk,
            reason="the conductor stopped during the cutover and the job "
            "is %s with the source %s: the target cannot be proven "
            "complete" % ("READY" if status.ready else "gone", state))
    timings = job.cutover()
    ctx.resource(cutover_done=True,
                 source_down_at=ctx.resources["cutover_started"])
    ctx.result(cutover=dict(timings, method="force", resumed=True))


# -- finish, start, stop_source --------------------------------------------


def finish(ctx):
    res = ctx.resources
    result = ctx.clients.agent.finish_mirror(
        ctx.admin_context, res["host"], ctx.id, res["server_id"])
    ctx.resource(mirror_finished=True)
    ctx.result(sync=result)


def start(ctx):
    """The commit: the source must still be down (shut down, or frozen
    after a forced cutover), the point of no return is recorded, then
    Nova starts the server on the migrated disk; the downtime ends here."""
    if not ctx.committed:
        require_source_down(ctx)
    requested_at = time.time()
    steps.request_start(ctx)
    if not ctx.resources.get("start_requested_at"):
        ctx.resource(start_requested_at=requested_at)
    server = ctx.clients.openstack.wait_server(ctx.resources["server_id"],
                                              "ACTIVE")
    res = ctx.resources
    downtime = None
    if res.get("source_down_at") and res.get("start_requested_at"):
        downtime = round(res["start_requested_at"] - res["source_down_at"],
                         3)
    ctx.result(server_id=server.id, host=res["host"],
               server_status=server.status, downtime_seconds=downtime)
    ctx.event("start", "server %s started on the migrated disk; the source "
              "stopped serving (%s) %.2f s before the start was requested"
              % (server.id, "frozen" if res.get("cutover_method") == "force"
                 else "shut down", downtime or 0.0))


def require_source_down(ctx):
    """Before the commit: the source has not been started again.

    CloudStack must not be starting it or running it on another host (a
    user's start, HA); then its domain on the KVM host must be gone or
    shut off (clean cutover) or still paused (forced cutover).  In that
    order: a start that lands between the two looks is seen by the
    second, which reads the host itself.
    """
    res = ctx.resources
    vm_name = ctx.migration["source_vm_name"]
    ctx.guard()
    vm = ctx.clients.cloudstack.find_vm(ctx.migration["source_vm_id"])
    # "Running" on its own host is CloudStack lagging behind the domain's
    # end (its stop job has not seen QEMU reaped yet): the domain decides.
    source_host = (ctx.migration["source"].get("host") or {}).get("id")
    moved = vm.get("hostid") and vm.get("hostid") != source_host
    if vm["state"] == "Starting" or (vm["state"] == "Running" and moved):
        raise exception.SourceNotStopped(
            vm=vm_name, detail="CloudStack says %s on host %s"
            % (vm["state"], vm.get("hostname") or vm.get("hostid")))
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        try:
            state = kvmhost.domain_state(kvm.domain(res["source_domain"]))
        except mirror_errors.SourceDomainNotFound:
            state = "gone"
        host_name = kvm.name
    # A clean cutover's domain may still be in libvirt's hands (QEMU said
    # SHUTDOWN, not yet reaped): it runs no guest code any more.
    allowed = ("paused",) if res.get("cutover_method") == "force" \
        else ("gone", "shut off", "shutting down")
    if state not in allowed:
        raise exception.SourceNotStopped(
            vm=vm_name, detail="its domain %s is %s on %s"
            % (res["source_domain"], state, host_name))


def _wait_stop_job(ctx):
    """The clean cutover's CloudStack stop job, to its end."""
    job_id = ctx.resources.get("source_stop_job")
    if job_id:
        ctx.clients.cloudstack.wait_for_job(
            job_id, "stopVirtualMachine", ctx.migration["source_vm_name"])
        ctx.resource(source_stop_job=None)


def stop_source(ctx):
    """Stop the frozen CloudStack VM through CloudStack (a clean cutover
    did already: wait for that job); delete it if asked.  Forced: a paused
    guest cannot shut down."""
    cs = ctx.clients.cloudstack
    vm_id = ctx.migration["source_vm_id"]
    try:
        _wait_stop_job(ctx)
    except cloudstack_errors.CloudStackJobFailed as exc:
        # The Nova server already runs the proven disk and the source's
        # domain has ended: only CloudStack's view is behind.  Its state
        # decides below; a VM it still calls Running is stopped forced.
        ctx.resource(source_stop_job=None)
        ctx.event("stop_source", "CloudStack's stop job for VM %s failed "
                  "after the cutover (%s); checking the VM's state"
                  % (ctx.migration["source_vm_name"], exc), kind="warning")
    vm = cs.find_vm(vm_id)
    if vm["state"] == "Running":
        ctx.resource(source_stopped=True)
        ctx.guard()
        cs.stop_vm(vm_id, forced=True)
    elif vm["state"] not in ("Stopped", "Destroyed", "Expunging"):
        raise exception.Invalid(
            reason="CloudStack VM %s is %s" % (vm["name"], vm["state"]))
    ctx.resource(source_suspended=False)
    ctx.result(source_stopped=True)


WARM = [
    ("validate", validate),
    ("image", image),
    ("ports", steps.ports),
    ("boot", steps.boot),
    ("mirror", mirror),
    ("ready", ready),
    ("cutover", cutover),
    ("finish", finish),
    ("swap", steps.swap),
    ("start", start),
    ("stop_source", stop_source),
    ("cleanup", steps.cleanup),
    ("retire_source", steps.retire_source),
]


# -- rollback ----------------------------------------------------------------


def _resume(dom):
    if kvmhost.domain_state(dom) == "paused":
        dom.resume()
        return True
    return False


def undo_job(ctx):
    """End our block job (never pivot) and resume the source, unless the
    Nova server may run the migrated disk (then undo_source does it once
    the server is gone)."""
    res = ctx.resources
    if ctx.committed or not (res.get("mirror_started")
                             or res.get("source_suspended")):
        return None
    done = []
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        try:
            dom = kvm.domain(res["source_domain"])
        except mirror_errors.SourceDomainNotFound:
            dom = None
        if dom is not None:
            job = _job(ctx, dom)
            if _ours(ctx, dom, job):
                job.cancel()
                done.append("ended the block copy")
            if res.get("source_suspended"):
                ctx.guard()
                if _resume(dom):
                    done.append("resumed CloudStack VM %s"
                                % ctx.migration["source_vm_name"])
                ctx.resource(source_suspended=False)
    ctx.resource(mirror_started=False)
    return "; ".join(done) or None


def undo_target(ctx):
    res = ctx.resources
    if ctx.committed or not res.get("mirror_prepared") \
            or not res.get("server_id"):
        return None
    answer = ctx.clients.agent.abort_mirror(
        ctx.admin_context, res["host"], ctx.id, res["server_id"])
    ctx.resource(mirror_prepared=False)
    if answer.get("aborted"):
        return "removed the mirror target on %s" % res["host"]
    return None


def undo_source(ctx):
    """Give the CloudStack VM back: never once Nova runs its disk."""
    res = ctx.resources
    if ctx.committed:
        return None
    if res.get("source_suspended"):
        ctx.guard()
        with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
            resumed = _resume(kvm.domain(res["source_domain"]))
        ctx.resource(source_suspended=False)
        if resumed:
            return "resumed CloudStack VM %s" % (
                ctx.migration["source_vm_name"])
    if res.get("source_stopped"):
        cs = ctx.clients.cloudstack
        vm_id = ctx.migration["source_vm_id"]
        try:
            # A clean cutover's stop may still run: starting meanwhile
            # would be refused.
            _wait_stop_job(ctx)
        except cloudstack_errors.CloudStackError:
            LOG.warning("Migration %s: the CloudStack stop job failed",
                        ctx.id, exc_info=True)
            ctx.resource(source_stop_job=None)
        # A stop that failed (or never got to CloudStack) left it running.
        started = cs.find_vm(vm_id)["state"] != "Running"
        if started:
            ctx.guard()
            cs.start_vm(vm_id)
        ctx.resource(source_stopped=False)
        if started:
            return "started CloudStack VM %s again" % (
                ctx.migration["source_vm_name"])
    return None


ROLLBACK = [
    ("undo_job", undo_job),
    ("undo_target", undo_target),
    ("undo_swap", steps.undo_swap),
    ("undo_boot", steps.undo_boot),
    ("undo_ports", steps.undo_ports),
    ("undo_source", undo_source),
]
