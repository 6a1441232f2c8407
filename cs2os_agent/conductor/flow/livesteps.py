"""The live flow's own steps (live.py): validate, target, hop, move, and
their undo steps.

Every agent call that the agent makes idempotent goes through
agentcall.call (repeated after an agent restart); begin_live_move is not
idempotent and is called once, recorded first (``move_begun``) so that the
rollback aborts whatever it began.
"""

from cs2os_agent.cloudstack import discovery
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import agentcall
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import source

# How long the agent holds B waiting for the stream (paused, before any
# of the guest is in it) for the conductor's finish_live_move: the
# os-resetState and the commit come in between.  Past it the agent undoes
# the move by itself (the temporary domain runs on).
MOVE_WAIT_SECONDS = 60
MiB = 1024 * 1024


def _options(ctx):
    return ctx.migration["options"] or {}


def refusals(ctx):
    """Why live mode cannot move this VM (after prepare.validate), as
    sentences; empty when it can."""
    res = ctx.resources
    return reasons(ctx.migration["source"], res.get("data_disks") or [],
                   res.get("layers") or [], _options(ctx))


def reasons(vm, data_disks, layers, options):
    """Why live mode cannot move CloudStack VM ``vm`` (discovery's view)
    with these data disks and layers under its root volume, as the
    request's ``options`` ask; also the preflight's (preflight.py)."""
    reasons = []
    if data_disks:
        reasons.append("CloudStack VM %s has %d data disk(s): data disks "
                       "are not supported in live mode yet"
                       % (vm["name"], len(data_disks)))
    storage = (vm.get("root_volume") or {}).get("storage") or {}
    if storage.get("type") == discovery.RBD:
        reasons.append("the root volume of CloudStack VM %s is on RBD "
                       "primary storage: not supported in live mode"
                       % vm["name"])
    if layers:
        reasons.append("the root volume of CloudStack VM %s has %d "
                       "layer(s) between it and its template: live mode "
                       "moves the volume onto the template only"
                       % (vm["name"], len(layers)))
    if options.get("cutover") == states.MANUAL:
        reasons.append("cutover manual is not supported in live mode yet "
                       "(the guest moves as soon as it is ready)")
    return reasons


def validate(ctx):
    """The cold checks, the live refusals, then warm's checks of the
    running source.  A refusal fails the migration, or with live_fallback
    switches it to warm mode: the runner then goes on with the warm
    flow's steps (runner.flow reads the mode from the record)."""
    prepare.validate(ctx)
    refused = refusals(ctx)
    if not refused:
        mirroring.check_source(ctx)
        return
    reason = "; ".join(refused)
    if not _options(ctx).get("live_fallback"):
        raise exception.Invalid(
            reason="live mode refused: %s (migrate it in another mode; "
            "with live_fallback a refusal falls back to warm mode)"
            % reason)
    ctx.save(mode=states.WARM)
    ctx.result(live_fallback={"from": states.LIVE, "to": states.WARM,
                              "reason": reason})
    ctx.event("validate", "live mode refused (%s): falling back to warm "
              "mode, as live_fallback allows" % reason, kind="warning")
    # Warm's own checks, under warm's rules (rootdisk.py refuses what a
    # warm migration cannot mirror, naming it).
    mirroring.validate(ctx)


def target(ctx):
    """The agent stages a fresh T on Nova's base D (proving D == B first)
    and swaps it in as Nova's disk, Nova's original kept for the undo."""
    res = ctx.resources
    if res.get("swapped"):
        # An earlier attempt (conductor restart) may have swapped in a T
        # that is not known to be whole: Nova's disk back, and afresh.
        agentcall.call(ctx, "target", "restore_disk", ctx.id,
                       res["server_id"])
        ctx.resource(swapped=False)
    staged = agentcall.call(ctx, "target", "prepare_live_target", ctx.id,
                            res["server_id"], res["base_proof"],
                            res["overlay_virtual_size"])
    # Recorded first: an agent that dies after swapping but before its
    # answer leaves the rollback something to restore.
    ctx.resource(swapped=True)
    agentcall.call(ctx, "target", "swap_disk", ctx.id, res["server_id"])
    ctx.event("target", "D == B proven on %s; the live target %s is "
              "server %s's disk now" % (res["host"], staged.get("staged"),
                                        res["server_id"]))


def take_out_of_ha(ctx):
    """updateVirtualMachine haenable=false, the old value recorded first:
    CloudStack must not start the VM again when its domain leaves the
    host with the hop."""
    res = ctx.resources
    cs = ctx.clients.cloudstack
    vm_id = ctx.migration["source_vm_id"]
    if not res.get("ha_disabled"):
        before = bool(cs.find_vm(vm_id).get("haenable"))
        ctx.resource(ha_enabled_before=before, ha_disabled=True)
    ctx.guard()
    cs.set_vm_ha(vm_id, False)


def restore_ha(ctx):
    """Before the commit: CloudStack HA as it was (after the commit the VM
    must never start there again: it stays off)."""
    res = ctx.resources
    if not res.get("ha_disabled") or ctx.committed:
        return None
    before = bool(res.get("ha_enabled_before"))
    if before:
        ctx.guard()
        ctx.clients.cloudstack.set_vm_ha(ctx.migration["source_vm_id"],
                                         True)
    ctx.resource(ha_disabled=False)
    if before:
        return "turned CloudStack HA of VM %s on again" % (
            ctx.migration["source_vm_name"])
    return None


def _source(ctx):
    res = ctx.resources
    return {"host": res["kvm_host"], "domain": res["source_domain"]}


def hop(ctx):
    """HA off, then the agent hops the running guest (its disk copied
    along into T) from the KVM host onto the Nova host under a temporary
    name; an earlier attempt's hop is waited for (call_waiting)."""
    res = ctx.resources
    take_out_of_ha(ctx)
    ctx.check_cancelled("hop")
    ctx.resource(hop_started=True)  # before: the rollback hops back
    answer = agentcall.call_waiting(ctx, "hop", "live_hop", ctx.id,
                                    res["server_id"], _source(ctx))
    figures = {k: answer.get(k) for k in ("temp_domain", "downtime_ms",
                                          "seconds", "memory_bytes")}
    ctx.result(live=dict(ctx.migration["result"].get("live") or {},
                         hop=figures))
    ctx.event("hop", "the running guest hopped from %s to %s as %s: %.1f "
              "MiB of memory in %.1f s, paused %s ms"
              % (res["kvm_host"], res["host"], figures["temp_domain"],
                 (figures["memory_bytes"] or 0) / MiB,
                 figures["seconds"] or 0.0, figures["downtime_ms"]))


def move(ctx):
    """B waits (paused) for the stream; Nova's record says ACTIVE; the
    commit; the agent streams the guest into B and B runs.

    The commit is recorded before the stream is released, as commit.py
    records it before Nova's start: a conductor that dies during
    finish_live_move cannot know where the guest is, so from then on a
    retry resumes here (the agent answers the recorded outcome).  Only a
    move the agent says failed with the temporary domain running on
    (LiveFailed) takes the commit back, and the rollback runs.
    """
    res = ctx.resources
    if not ctx.committed:
        ctx.check_cancelled("move")
        if res.get("move_begun"):
            # An earlier attempt's (conductor restart): B may still wait
            # for a stream nobody releases; end it and begin afresh.
            agentcall.call(ctx, "move", "abort_live_move", ctx.id)
        ctx.resource(move_begun=True)  # before: the rollback aborts it
        ctx.guard()
        ctx.clients.agent.begin_live_move(
            ctx.admin_context, res["host"], ctx.id, res["server_id"],
            MOVE_WAIT_SECONDS)
        # While B is paused Nova's power-state sync takes ACTIVE + PAUSED
        # as "paused unexpectedly" and leaves it; SHUTOFF would stop it.
        ctx.openstack.reset_state(res["server_id"], "active")
        ctx.commit()
    try:
        figures = agentcall.call(ctx, "move", "finish_live_move", ctx.id)
    except exception.LiveFailed:
        # The temporary domain runs the guest again and B is shut off:
        # nothing moved, the rollback may run.
        ctx.uncommit()
        raise
    _record_move(ctx, figures)


def _record_move(ctx, figures):
    res = ctx.resources
    server = ctx.openstack.wait_server(res["server_id"], "ACTIVE")
    downtime_ms = figures.get("downtime_ms")
    live = dict(ctx.migration["result"].get("live") or {})
    live.update({k: figures.get(k) for k in (
        "downtime_ms", "switch_seconds", "stream_bytes", "state")})
    if figures.get("recovered"):
        live["recovered"] = True
    ctx.result(live=live, server_id=server.id, host=res["host"],
               server_status=server.status,
               downtime_seconds=(round(downtime_ms / 1000.0, 3)
                                 if downtime_ms is not None else None))
    ctx.event("move", "the guest runs in server %s (Nova's domain) on %s; "
              "QEMU paused it %s ms for the switch"
              % (server.id, res["host"], downtime_ms))


def undo_move(ctx):
    """Before the commit: the agent ends a move it began (B destroyed,
    the temporary domain runs on)."""
    res = ctx.resources
    if not res.get("move_begun") or ctx.committed:
        return None
    answer = agentcall.call(ctx, "rollback", "abort_live_move", ctx.id)
    ctx.resource(move_begun=False)
    if answer.get("aborted"):
        return "aborted the live move into server %s" % res["server_id"]
    return None


def undo_hop(ctx):
    """Before the commit: the agent hops the guest back onto its
    CloudStack KVM host under its own name, then HA as it was."""
    res = ctx.resources
    if ctx.committed:
        return None
    done = []
    if res.get("hop_started"):
        answer = agentcall.call(ctx, "rollback", "live_hop_back", ctx.id,
                                res["server_id"], _source(ctx))
        ctx.resource(hop_started=False)
        if answer.get("hopped_back"):
            done.append("the guest hopped back to %s as %s"
                        % (res["kvm_host"], res["source_domain"]))
    done.append(restore_ha(ctx))
    return "; ".join(x for x in done if x) or None


def undo_source(ctx):
    """As warm's (the CloudStack VM keeps running), and HA as it was."""
    done = [source.undo_source(ctx), restore_ha(ctx)]
    return "; ".join(x for x in done if x) or None
