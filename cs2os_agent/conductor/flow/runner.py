"""Runs a migration's steps in order, checkpointed, and rolls back.

Each step is idempotent and the name of the step in progress is stored
before it starts, so a conductor restarted at any point calls the same step
again and it finishes what the first attempt began.  After a failure the
rollback undoes, in reverse, what the recorded resources say was done.

The promise kept here (README, "Safety"):
- a rollback is recorded (state rolling_back, with the outcome it ends in)
  before its first undo step, so a conductor that takes over an interrupted
  rollback finishes the rollback and never resumes the forward flow;
- once the migration is committed (the Nova server was asked to start on
  the migrated disk) nothing rolls back: a failing step after the commit
  either leaves a warning (cleanup, retiring the source) and the flow goes
  on, or ends the migration failed with the record saying it is
  committed, and a retry resumes there;
- a conductor that lost its claim (LeaseLost) stops where it is, writing
  nothing: the conductor that took over owns the migration.
"""

from oslo_log import log as logging
from oslo_utils import timeutils

from cs2os_agent.common import exception
from cs2os_agent.common import faultpoints
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import live
from cs2os_agent.conductor.flow import warm

LOG = logging.getLogger(__name__)

def flow(migration):
    """(steps, rollback) of the migration's mode; read at call time."""
    if migration.get("mode") == states.WARM:
        return warm.STEPS, warm.ROLLBACK
    if migration.get("mode") == states.LIVE:
        return live.STEPS, live.ROLLBACK
    return cold.STEPS, cold.ROLLBACK


def run(ctx):
    """Drive ``ctx``'s migration to succeeded, failed or cancelled."""
    try:
        _run(ctx)
    except exception.LeaseLost as exc:
        LOG.warning("Migration %s: %s", ctx.id, exc)


def _run(ctx):
    step_list, rollback = flow(ctx.migration)
    if ctx.migration["state"] == states.ROLLING_BACK:
        LOG.info("Migration %s: finishing an interrupted rollback", ctx.id)
        _rollback_and_finish(ctx, rollback)
        return
    if ctx.migration["state"] in states.FINAL:
        return  # e.g. cancelled while queued, before this run began
    names = [name for name, _ in step_list]
    current = ctx.migration["step"]
    start = names.index(current) if current in names else 0
    if ctx.migration["state"] == states.QUEUED and not ctx.save(
            expect={"state": states.QUEUED}, state=states.RUNNING):
        return  # a cancel of the queued migration won
    if ctx.migration["started_at"] is None:
        ctx.save(started_at=timeutils.utcnow())
    _notify(ctx, "start")
    step = names[start]
    index = start
    try:
        while index < len(step_list):
            step, function = step_list[index]
            if ctx.stop_requested:
                LOG.info("Migration %s: pausing before %s for shutdown",
                         ctx.id, step)
                return
            ctx.check_cancelled(step)
            ctx.guard()
            ctx.save(step=step)
            faultpoints.reached("%s:before" % step)
            _run_step(ctx, step, function)
            faultpoints.reached("%s:after" % step)
            ctx.event(step, "done")
            # A live migration's validate may fall back to warm mode: the
            # steps (and the rollback) of the mode the record says now.
            step_list = flow(ctx.migration)[0]
            index = [name for name, _ in step_list].index(step) + 1
    except exception.LeaseLost:
        raise
    except exception.MigrationCancelled:
        ctx.event(step, "cancelled", kind="error")
        _begin_rollback(ctx, states.CANCELLED,
                        "cancelled by request during %s" % step)
        _rollback_and_finish(ctx, flow(ctx.migration)[1])
        return
    except Exception as exc:
        LOG.exception("Migration %s failed in %s", ctx.id, step)
        message = "%s failed: %s" % (step, exception.describe(exc))
        ctx.event(step, message, kind="error")
        if ctx.committed:
            _fail_committed(ctx, step, message)
            return
        _begin_rollback(ctx, states.FAILED, message)
        _rollback_and_finish(ctx, flow(ctx.migration)[1])
        return
    ctx.save(step=states.DONE)
    _finish(ctx, states.SUCCEEDED)
    _notify(ctx, "end")


def _run_step(ctx, step, function):
    """A step; after the commit, one that only tidies up (TIDY_STEPS)
    leaves a warning instead of failing."""
    if not (ctx.committed and step in states.TIDY_STEPS):
        function(ctx)
        return
    try:
        function(ctx)
    except exception.LeaseLost:
        raise
    except Exception as exc:  # noqa: BLE001 - committed: never roll back
        LOG.warning("Migration %s: %s failed after the commit: %s",
                    ctx.id, step, exc)
        ctx.warn(step, "%s failed after the commit: %s; the Nova server "
                 "keeps the migrated disk, this is left to do by hand"
                 % (step, exception.describe(exc)))


def _fail_committed(ctx, step, message):
    ctx.result(committed_failure={"step": step, "error": message})
    _finish(ctx, states.FAILED,
            error="%s. The migrated disk is committed to Nova server %s: "
            "cs2os will not start the CloudStack VM again or roll back; "
            "retry resumes at %s" % (message, ctx.resources.get("server_id"),
                                     step))
    _notify(ctx, "error")


def _begin_rollback(ctx, outcome, error):
    # Recorded before the first undo: a conductor that takes over goes on
    # rolling back.
    ctx.save(state=states.ROLLING_BACK,
             result=dict(ctx.migration["result"],
                         rollback_of={"state": outcome, "error": error}))


def _rollback_and_finish(ctx, rollback):
    """Undo what was done; finish only once every undo step succeeded.

    An undo step that fails (CloudStack or Nova busy, an agent away)
    leaves the record rolling_back: the engine claims it again at its next
    renewal and the rollback goes on, up to [conductor] rollback_attempts
    passes.  Then the migration ends with an error that names what is left
    undone, rather than a CloudStack VM silently left stopped.
    """
    outcome = ctx.migration["result"].get("rollback_of") or {
        "state": states.FAILED, "error": ctx.migration.get("error")}
    failures = _rollback(ctx, rollback)
    if failures:
        attempts = ctx.migration["result"].get("rollback_attempts", 0) + 1
        ctx.result(rollback_attempts=attempts)
        if attempts < ctx.conf.conductor.rollback_attempts:
            LOG.warning("Migration %s: rollback pass %d left %s undone; "
                        "the next pass follows at the next lease renewal",
                        ctx.id, attempts, ", ".join(failures))
            return
        ctx.result(rollback_incomplete=failures)
        outcome = {"state": outcome["state"], "error": "%s; the rollback "
                   "is incomplete after %d passes (%s): see the events, "
                   "finish it by hand" % (outcome["error"], attempts,
                                          "; ".join(failures))}
    _finish(ctx, outcome["state"], error=outcome["error"])
    if outcome["state"] == states.FAILED:
        _notify(ctx, "error")


def _finish(ctx, state, error=None):
    ctx.save(state=state, error=error, finished_at=timeutils.utcnow())


def _rollback(ctx, rollback):
    """One pass over the undo steps; the failures, as "<step>: <why>"."""
    undone = list(ctx.migration["result"].get("rolled_back") or [])
    failures = []
    for name, function in rollback:
        ctx.guard()
        faultpoints.reached("rollback:%s:before" % name)
        try:
            message = function(ctx)
        except exception.LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - keep undoing the rest
            LOG.exception("Migration %s: rollback %s failed", ctx.id, name)
            failures.append("%s: %s" % (name, exception.describe(exc)))
            ctx.event("rollback", "%s failed: %s"
                      % (name, exception.describe(exc)), kind="error")
            continue
        faultpoints.reached("rollback:%s:after" % name)
        if message:
            undone.append(message)
            ctx.event("rollback", message, kind="rollback")
            ctx.result(rolled_back=undone)
    ctx.result(rolled_back=undone)
    return failures


def _notify(ctx, what):
    if ctx.notifier is not None:
        ctx.notifier.emit(ctx.admin_context, what, ctx.migration)
