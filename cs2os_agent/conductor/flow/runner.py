"""Runs a migration's steps in order, checkpointed, and rolls back.

Each step is idempotent and the name of the step in progress is stored
before it starts, so a conductor restarted at any point calls the same step
again and it finishes what the first attempt began.  After a failure the
rollback undoes, in reverse, what the recorded resources say was done.
"""

from oslo_log import log as logging
from oslo_utils import timeutils

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import steps
from cs2os_agent.conductor.flow import warm

LOG = logging.getLogger(__name__)

DONE = "done"


def flow(migration):
    """(steps, rollback) of the migration's mode; read at call time."""
    if migration.get("mode") == "warm":
        return warm.WARM, warm.ROLLBACK
    return steps.COLD, steps.ROLLBACK


def run(ctx):
    """Drive ``ctx``'s migration to succeeded, failed or cancelled."""
    step_list, rollback = flow(ctx.migration)
    names = [name for name, _ in step_list]
    current = ctx.migration["step"]
    start = names.index(current) if current in names else 0
    if ctx.migration["started_at"] is None:
        ctx.save(started_at=timeutils.utcnow())
    if ctx.migration["state"] == "queued":
        ctx.save(state="running")
    _notify(ctx, "start")
    step = names[start]
    try:
        for step, function in step_list[start:]:
            if ctx.stop_requested:
                LOG.info("Migration %s: pausing before %s for shutdown",
                         ctx.id, step)
                return
            ctx.check_cancelled(step)
            ctx.save(step=step)
            function(ctx)
            ctx.event(step, "done")
    except exception.MigrationCancelled:
        ctx.event(step, "cancelled", kind="error")
        _rollback(ctx, rollback)
        _finish(ctx, "cancelled", error="cancelled by request during %s"
                % step)
        return
    except Exception as exc:
        LOG.exception("Migration %s failed in %s", ctx.id, step)
        message = "%s failed: %s" % (step, exception.describe(exc))
        ctx.event(step, message, kind="error")
        _rollback(ctx, rollback)
        _finish(ctx, "failed", error=message)
        _notify(ctx, "error")
        return
    ctx.save(step=DONE)
    _finish(ctx, "succeeded")
    _notify(ctx, "end")


def _finish(ctx, state, error=None):
    ctx.save(state=state, error=error, finished_at=timeutils.utcnow())


def _rollback(ctx, rollback):
    undone = []
    for name, function in rollback:
        try:
            message = function(ctx)
        except Exception as exc:  # noqa: BLE001 - keep undoing the rest
            LOG.exception("Migration %s: rollback %s failed", ctx.id, name)
            ctx.event("rollback",
                      "%s failed: %s" % (name, exception.describe(exc)),
                      kind="error")
            continue
        if message:
            undone.append(message)
            ctx.event("rollback", message, kind="rollback")
    ctx.result(rolled_back=undone)


def _notify(ctx, what):
    if ctx.notifier is not None:
        ctx.notifier.emit(ctx.admin_context, what, ctx.migration)
