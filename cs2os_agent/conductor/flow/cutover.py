"""A warm migration's cutover: the source stops serving, the target is whole.

"shutdown" (default): with the job READY and nothing left to copy,
CloudStack stops the VM (the guest shuts down cleanly) while the
synchronous mirror keeps every write on both sides; QEMU's events prove
the job stayed whole until the domain ended (sourcehost/sourceend.py).
"force", for guests that will not shut down: suspend the source, check the
job READY with nothing left to copy, end it without pivot.  A conductor
that dies mid-cutover finishes it only if that is provably exact.
"""

import time

from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import states
from cs2os_agent.conductor import request as request_schema
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import source
from cs2os_agent.conductor.flow import window
from cs2os_agent.sourcehost import kvmhost
from cs2os_agent.sourcehost import sourceend

LOG = logging.getLogger(__name__)

# A cutover waits this long for a moment with nothing left to copy (a
# guest write in flight makes cur < end for a few milliseconds).
SETTLE_TIMEOUT = 60.0
SETTLE_POLL = 0.02
# CloudStack said the VM stopped: its domain's end event follows within
# this (libvirt reports it once QEMU is reaped).
DOMAIN_END_TIMEOUT = 60.0


def cutover(ctx):
    """The source stops serving and the target is proven whole (the method
    the operator's action or the request chose); a conductor that died
    mid-cutover finishes it only if that is provably exact."""
    res = ctx.resources
    if res.get("cutover_done"):
        return
    if res.get("cutover_started") and \
            res.get("cutover_method") == states.SHUTDOWN:
        raise mirror_errors.BlockCopyFailed(
            domain=res["source_domain"], disk=res["source_disk"],
            reason="the conductor stopped during a clean cutover: the QEMU "
            "events that prove the target complete went with it")
    if not res.get("cutover_started"):
        # Not begun yet: the window may have ended since the ready step
        # (a conductor that took over): fail with the source untouched.
        window.recheck(ctx)
    with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
        dom = kvm.domain(res["source_domain"])
        job = mirroring.job_of(ctx, dom)
        if res.get("cutover_started"):
            _finish_interrupted_cutover(ctx, dom, job)
            return
        job = mirroring.attach(ctx, dom, job)
        method = cutover_method(ctx)
        if method == states.FORCE:
            timings = _freeze_and_end(ctx, dom, job)
        else:
            timings = _shut_down(ctx, kvm, dom, job)
    ctx.resource(cutover_done=True)
    ctx.result(cutover=timings)
    if method == states.FORCE:
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
        status = mirroring.check_job(ctx, job)
        if mirroring.is_ready(ctx, status):
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
    # Every job of the migration (one per disk) must end after the
    # shutdown for the proof.
    with sourceend.SourceEndWatch(kvm.conn, dom, job.disk,
                                  jobs=getattr(job, "count", 1)) as watch:
        # Watched from before this check: nothing after it goes unseen.
        _settled(ctx, job)
        mirroring.check_target(ctx)
        # Recorded first: a rollback starts the VM again.
        ctx.resource(cutover_started=time.time(),
                     cutover_method=states.SHUTDOWN, source_stopped=True)
        t0 = time.monotonic()
        job_id = cs.stop_vm_async(vm_id)
        ctx.resource(source_stop_job=job_id)
        _wait_decided(ctx, cs, job_id, watch, kvm)
        decided = time.monotonic() - t0
        verdict = watch.verdict()
    ctx.resource(source_down_at=verdict["down_at"])
    return {"method": states.SHUTDOWN, "decided": round(decided, 3),
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


def _freeze_and_end(ctx, dom, job):
    """Suspend the source and end the job when nothing is left to copy."""
    while True:
        _settled(ctx, job)
        mirroring.check_target(ctx)
        # Recorded first: a rollback resumes what this suspends.
        suspended_at = time.time()
        ctx.resource(cutover_started=suspended_at, cutover_method=states.FORCE,
                     source_suspended=True)
        try:
            timings = job.cutover()
        except mirror_errors.BlockCopyFailed:
            # Refused before it suspended (a write raced the check): the
            # source runs on, the job is whole; try again.
            if virt.state(dom) == virt.RUNNING and \
                    job.status().active:
                ctx.resource(cutover_started=None, source_suspended=False)
                continue
            raise
        ctx.resource(source_down_at=suspended_at)
        return dict(timings, method=states.FORCE)


def _finish_interrupted_cutover(ctx, dom, job):
    """A conductor died mid-cutover: finish it only if provably exact.

    Exact when the source is still frozen and the job still READY: QEMU
    drained the guest's writes at the suspend and the job lost none.
    Otherwise nobody can tell; the migration fails and the rollback
    resumes the source.
    """
    status = job.status()
    state = virt.state(dom)
    if state != virt.PAUSED or not status.active or not status.ready:
        raise mirror_errors.BlockCopyFailed(
            domain=job.name, disk=job.disk,
            reason="the conductor stopped during the cutover and the job "
            "is %s with the source %s: the target cannot be proven "
            "complete" % ("READY" if status.ready else "gone", state))
    timings = job.cutover()
    ctx.resource(cutover_done=True,
                 source_down_at=ctx.resources["cutover_started"])
    ctx.result(cutover=dict(timings, method=states.FORCE, resumed=True))


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
            job = mirroring.job_of(ctx, dom)
            if mirroring.is_ours(ctx, dom, job):
                job.cancel()
                done.append("ended the block copy")
            if res.get("source_suspended"):
                ctx.guard()
                if source.resume_if_paused(dom):
                    done.append("resumed CloudStack VM %s"
                                % ctx.migration["source_vm_name"])
                ctx.resource(source_suspended=False)
    ctx.resource(mirror_started=False)
    return "; ".join(done) or None
