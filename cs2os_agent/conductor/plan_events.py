"""A plan's event log (table plan_events): what happened to it, in order.

The conductor records an event where it acts (created, validated,
started, each VM's migration created, skipped or not started, cancelled,
retried).  What happens inside a migration's own flow, its end, is
recorded by whoever looks at the plan first after it (plan_view.py), at
the time the migration finished and under a key unique in the plan, so
two conductors looking at once record it once; the plan's ``done`` by
the one whose view moved it there.
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


def record(db, plan_id, kind, message, **extra):
    """Append an event; a failure to record is logged, never raised (the
    act it describes is done)."""
    try:
        return plan_db.add_event(db, plan_id, kind, message, **extra)
    except Exception:  # noqa: BLE001 - the log is second to the work
        LOG.warning("Plan %s: event %s not recorded", plan_id, kind,
                    exc_info=True)
        return False


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
               at=_when(migration.get("finished_at")))
    if done:  # this caller moved the plan to done: nobody else records it
        counts = {}
        for row in vms:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        record(db, plan["id"], DONE, "plan done: %s" % ", ".join(
            "%d %s" % (n, s) for s, n in sorted(counts.items())))


def _when(stamp):
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp).replace(tzinfo=None)
