"""A warm migration's cutover window: hold READY until it opens, cut over
inside it, or fail while the source still runs untouched.

The request's ``cutover_window`` ({"start", "end"}, UTC, in the record:
any conductor that resumes the migration keeps it) bounds when the
cutover may begin.  The mirror starts at once (or at ``start_at``); the
``ready`` step calls hold() with the job READY:

- before the window: the mirror is held READY (its progress recorded and
  its failures watched, as a manual hold does) until the window opens;
- with cutover "manual": inside the window, until the operator's cutover
  action, but no later than the window's end;
- once the window has ended (the mirror became READY too late, or no
  cutover was requested in time): the step fails, and the rollback ends
  the mirror and deletes what was made in OpenStack; the CloudStack VM
  was never stopped and keeps running on its own disk.

A cutover that began inside the window finishes even if it runs past
the end: stopping it half way would be the worse outage.  The cutover
step checks the window again before it begins (recheck()): a conductor
that took over a migration READY before its conductor stopped would
otherwise cut over after the window ended.
"""

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import schedule


class CutoverWindowMissed(exception.Cs2osException):
    msg_fmt = ("the cutover window %(start)s to %(end)s ended at %(end)s "
               "%(why)s; the CloudStack VM keeps running untouched")


def hold(ctx, job):
    """Return once the cutover may start inside the window (at once when
    the migration has none); CutoverWindowMissed once it has ended."""
    window = schedule.window(ctx.migration)
    if window is None:
        return
    # Here, not at the top: mirroring.py calls this module.
    from cs2os_agent.conductor.flow import mirroring
    opens, ends = window
    span = {"start": schedule.iso(opens), "end": schedule.iso(ends)}
    _check_open(ends, span, "before the mirror was READY")
    if schedule.now() < opens:
        ctx.event("ready", "holding the mirror READY until the cutover "
                  "window opens at %(start)s (it ends at %(end)s)" % span)
        mirroring.wait(ctx, job, "ready",
                       lambda c, status: schedule.now() >= opens, 0)
    manual = (ctx.migration["options"] or {}).get("cutover") == \
        states.MANUAL
    if manual and not mirroring.cutover_requested(ctx):
        ctx.event("ready", "the cutover window is open: holding the mirror "
                  "READY until a cutover is requested, at the latest "
                  "until %(end)s" % span)
        mirroring.wait(ctx, job, "ready", lambda c, status: (
            schedule.now() >= ends or mirroring.cutover_requested(c)), 0)
        _check_open(ends, span, "before a cutover was requested")
    _check_open(ends, span, "before the cutover could start")
    ctx.result(cutover_window=dict(span, cutover_at=schedule.iso(
        schedule.now())))
    ctx.event("ready", "inside the cutover window (until %(end)s): "
              "cutting over" % span)


def _check_open(ends, span, why):
    if schedule.now() >= ends:
        raise CutoverWindowMissed(why=why, **span)


def recheck(ctx):
    """CutoverWindowMissed if the migration's window has ended: called
    by the cutover step before it touches the source (it may run long
    after hold() let it through, on another conductor)."""
    window = schedule.window(ctx.migration)
    if window is None:
        return
    opens, ends = window
    span = {"start": schedule.iso(opens), "end": schedule.iso(ends)}
    _check_open(ends, span, "before the cutover began (the mirror was "
                "READY inside it, but the cutover did not start in time)")
