"""The agent's work on the compute node's disk: copy, swap, tidy up.

Each is an idempotent agent call (agentcall.call repeats it after an agent
restart): sync copies and stages the overlay rebased onto Nova's base,
swap puts the staged disk in place of Nova's, cleanup drops Nova's original
once committed, undo_swap puts it back before the commit.
"""

from cs2os_agent.conductor.flow import agentcall


def sync(ctx):
    """The agent copies the overlay (and the layers between it and the
    template, merged into it) and stages it rebased onto Nova's base D; an
    earlier attempt's copy still running there is waited for."""
    resources = ctx.resources
    result = agentcall.call_waiting(
        ctx, "sync", "sync_overlay", ctx.id,
        resources["server_id"], resources["overlay_source"],
        resources.get("layers") or None,
        bool((ctx.migration["options"] or {}).get("keep_snapshots")),
        resources.get("overlay_format") or "qcow2")
    ctx.save(bytes_done=result["bytes_copied"],
             bytes_total=result["bytes_copied"], progress_step="sync")
    ctx.result(sync=result)
    if result.get("internal_snapshots"):
        # What the agent found and did, in place of what validate expected.
        ctx.result(internal_snapshots=result["internal_snapshots"])


def swap(ctx):
    """The agent puts the staged disk in place of Nova's."""
    resources = ctx.resources
    # Recorded first: an agent that dies after swapping but before its
    # answer leaves the rollback something to restore (a restore with
    # nothing swapped does nothing).
    ctx.resource(swapped=True)
    agentcall.call(ctx, "swap", "swap_disk", ctx.id, resources["server_id"])


def cleanup(ctx):
    """After the commit: the agent drops Nova's original disk and its
    bookkeeping for this migration."""
    agentcall.call(ctx, "cleanup", "cleanup", ctx.id,
                   ctx.resources["server_id"])


def undo_swap(ctx):
    """Before the commit: Nova's original disk back (the server stopped
    through Nova first)."""
    resources = ctx.resources
    if not resources.get("swapped") or ctx.committed:
        return None
    ctx.guard()
    ctx.openstack.stop_server(resources["server_id"])
    answer = agentcall.call(ctx, "rollback", "restore_disk", ctx.id,
                            resources["server_id"])
    ctx.resource(swapped=False)
    if not answer.get("restored"):
        return None  # the swap itself never happened
    return "put Nova's original disk back on server %s" % (
        resources["server_id"])
