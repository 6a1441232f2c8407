"""A plan's event log (table plan_events): what happened to it, in order.

The conductor records an event where it acts (created, validated,
started, each VM's migration created, skipped or not started, cancelled,
retried).  What happens inside a migration's own flow, its end, is
recorded by catch_up(), run by the conductor that ended it
(plan_watch.py), by every look at the plan (plan_view.py) and by every
conductor's periodic sweep of running plans, at the time the migration
finished and under a key unique in the plan, so two conductors catching
up at once record it once; the plan's ``done`` by the one whose update
moved it there.

Every event recorded here, and only one actually added to the log, is
also sent as a ``cs2os.plan.<kind>`` notification by the notifier the
conductor registers at start (set_notifier(), conductor/plan_notify.py);
without one (the API's and tools' processes, unit tests) nothing is sent.
The notifier is registered rather than imported: this module builds no
oslo.messaging Notifier of its own, and tests register a fake one.
"""

import datetime

from oslo_log import log as logging

from cs2os_agent.common import states
from cs2os_agent.db import plans as plan_db

LOG = logging.getLogger(__name__)

CREATED, VALIDATED, STARTED = "created", "validated", "started"
MIGRATION_CREATED, SKIPPED, NOT_STARTED = ("migration_created", "skipped",
                                           "not_started")
ENDED, CANCELLED, RETRIED, DONE = "ended", "cancelled", "retried", "done"

# The process's notifier (an object with emit(plan, event,
# migration_state)), or None: nothing is sent.
_notifier = None


def set_notifier(notifier):
    """Send every event recorded from now on through ``notifier`` (None:
    stop sending)."""
    global _notifier
    _notifier = notifier


def record(db, plan_id, kind, message, counts=None, migration_state=None,
           **extra):
    """Append an event and notify it once it is in the log; a failure to
    record or to notify is logged, never raised (the act it describes is
    done).  ``counts`` (done) and ``migration_state`` (ended) are for the
    notification only."""
    # The time is fixed here so that the log and the notification agree.
    extra["at"] = extra.get("at") or _utcnow()
    try:
        added = plan_db.add_event(db, plan_id, kind, message, **extra)
    except Exception:  # noqa: BLE001 - the log is second to the work
        LOG.warning("Plan %s: event %s not recorded", plan_id, kind,
                    exc_info=True)
        return False
    # add_event is False for a dedupe key the plan has already: another
    # conductor recorded (and notified) it.
    if added and _notifier is not None:
        _notify(db, plan_id, dict(
            kind=kind, message=message, vm=extra.get("vm"),
            migration_id=extra.get("migration_id"),
            created_at=extra["at"], counts=counts), migration_state)
    return added


def _notify(db, plan_id, event, migration_state):
    try:
        plan = plan_db.get(db, plan_id)
        _notifier.emit(plan, event, migration_state)
    except Exception:  # noqa: BLE001 - as the log, second to the work
        LOG.warning("Plan %s: notification of event %s not sent", plan_id,
                    event["kind"], exc_info=True)


def catch_up(db, plan, vms, migrations, done):
    """Record the ends of the plan's migrations (and ``done``) not yet in
    its log: ``vms`` the view's rows, ``migrations`` by id."""
    keys = plan_db.dedupe_keys(db, plan["id"])
    for row in vms:
        migration = migrations.get(row["migration_id"])
        if migration is None or migration["state"] not in states.FINAL:
            continue
        key = "ended:%s:%s" % (migration["id"], migration["finished_at"])
        if key in keys:
            continue
        message = "VM %s: migration %s ended %s" % (
            row["vm_name"] or row["vm"], migration["id"],
            migration["state"])
        if migration.get("error"):
            message += ": %s" % migration["error"]
        record(db, plan["id"], ENDED, message, vm=row["vm"],
               migration_id=migration["id"], dedupe=key[:100],
               at=_when(migration.get("finished_at")),
               migration_state=migration["state"])
    if done:  # this caller moved the plan to done: nobody else records it
        counts = {}
        for row in vms:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        record(db, plan["id"], DONE, "plan done: %s" % ", ".join(
            "%d %s" % (n, s) for s, n in sorted(counts.items())),
            counts=counts)


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _when(stamp):
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp).replace(tzinfo=None)
