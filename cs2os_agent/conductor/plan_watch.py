"""Plans end without anybody looking at them.

A plan moves to ``done``, and the ends of its migrations and its
``done`` go into its event log (and out as cs2os.plan.<kind>
notifications), in plan_view.refresh().  Every look at the plan
(get_plan, list_plans) runs it; so does the conductor's engine:

* migration_ended(): when a migration of a plan reaches a final state
  on this conductor (engine.py, at the end of its run), so the plan's
  log follows its migrations as they end;
* sweep(): every lease renewal period (and at start), for every running
  plan, for what ends without a run ending here: a queued migration
  cancelled before any conductor claimed it, or a conductor that died
  between a migration's end and its catch-up.

Both are idempotent and safe next to another conductor doing the same:
an end carries a dedupe key unique in the plan's log, and ``done`` is
recorded (and notified) only by the caller whose compare-and-set moved
the plan from running to done (plan_view.refresh, plan_events.catch_up).
Neither ever raises: the log is second to the migrations.
"""

from oslo_log import log as logging

from cs2os_agent.common import states
from cs2os_agent.conductor import plan_view
from cs2os_agent.db import plans as plan_db

LOG = logging.getLogger(__name__)

RUNNING, DONE = "running", "done"


def catch_up(db, plan_id):
    """Bring the plan's state and log up to date; its state afterwards
    (None: no such plan, or the catch-up failed, said in the log)."""
    try:
        plan = plan_db.get(db, plan_id)
        if plan["state"] == "draft":
            return plan["state"]  # nothing of it has run
        before = plan["state"]
        plan, _vms = plan_view.refresh(db, plan)
        if before == RUNNING and plan["state"] == DONE:
            LOG.info("Plan %s is done", plan_id)
        return plan["state"]
    except plan_db.PlanNotFoundError:
        return None  # deleted meanwhile: nothing to record
    except Exception:  # noqa: BLE001 - the migration's work is done
        LOG.warning("Plan %s: catching up its event log failed", plan_id,
                    exc_info=True)
        return None


def migration_ended(db, migration):
    """Catch up the plan of ``migration`` (its record, as read after its
    run) if it belongs to one and is final; the plan's state afterwards,
    None when there was nothing to do."""
    plan_id = migration.get("plan_id")
    if not plan_id or migration.get("state") not in states.FINAL:
        return None
    return catch_up(db, plan_id)


def sweep(db):
    """Catch up every running plan; the ids of those now done."""
    try:
        running = plan_db.list_(db, {"state": RUNNING})
    except Exception:  # noqa: BLE001 - the next period tries again
        LOG.warning("Listing running plans failed", exc_info=True)
        return []
    return [plan["id"] for plan in running
            if catch_up(db, plan["id"]) == DONE]
