"""The CloudStack VM: stop it, prove it stays down, retire it, give it back.

Cold: stop_source stops it before the copy; require_source_stopped is
checked before the commit; retire_source makes sure it never runs again
after it; undo_stop_source starts it again on a rollback.  Warm: the
cutover stops (or freezes) it; require_source_down checks both CloudStack
and the domain on the KVM host before the commit; stop_after_cutover tidies
CloudStack's view; undo_source resumes or starts it on a rollback.
"""

from oslo_log import log as logging

from cs2os_agent import virt
from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import states
from cs2os_agent.sourcehost import kvmhost

LOG = logging.getLogger(__name__)


def stop_source(ctx):
    """Cold: CloudStack stops the VM (recorded before it is asked)."""
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
            state = virt.state(kvm.domain(res["source_domain"]))
        except mirror_errors.SourceDomainNotFound:
            state = virt.GONE
        host_name = kvm.name
    # A clean cutover's domain may still be in libvirt's hands (QEMU said
    # SHUTDOWN, not yet reaped): it runs no guest code any more.
    allowed = (virt.PAUSED,) if res.get("cutover_method") == states.FORCE \
        else (virt.GONE, virt.SHUT_OFF, virt.SHUTTING_DOWN)
    if state not in allowed:
        raise exception.SourceNotStopped(
            vm=vm_name, detail="its domain %s is %s on %s"
            % (res["source_domain"], state, host_name))


def wait_stop_job(ctx):
    """The clean cutover's CloudStack stop job, to its end."""
    job_id = ctx.resources.get("source_stop_job")
    if job_id:
        ctx.clients.cloudstack.wait_for_job(
            job_id, "stopVirtualMachine", ctx.migration["source_vm_name"])
        ctx.resource(source_stop_job=None)


def stop_after_cutover(ctx):
    """Stop the frozen CloudStack VM through CloudStack (a clean cutover
    did already: wait for that job); delete it if asked.  Forced: a paused
    guest cannot shut down."""
    cs = ctx.clients.cloudstack
    vm_id = ctx.migration["source_vm_id"]
    try:
        wait_stop_job(ctx)
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


def resume_if_paused(dom):
    """Resume a frozen source domain; True if it was paused."""
    if virt.state(dom) == virt.PAUSED:
        dom.resume()
        return True
    return False


def undo_source(ctx):
    """Give the CloudStack VM back: never once Nova runs its disk."""
    res = ctx.resources
    if ctx.committed:
        return None
    if res.get("source_suspended"):
        ctx.guard()
        with kvmhost.connect(ctx.conf, res["kvm_host"]) as kvm:
            resumed = resume_if_paused(kvm.domain(res["source_domain"]))
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
            wait_stop_job(ctx)
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
