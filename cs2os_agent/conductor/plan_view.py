"""What a plan looks like to its callers: per-VM rows, counts by state,
bytes done of the whole; a running plan whose migrations are all final
becomes ``done`` here (the conductor is the only writer).

refresh() is that step alone, the plan's state and event log brought up
to date: every look at a plan runs it, and so does the conductor that
ends one of its migrations (conductor/plan_watch.py), so that a plan
nobody looks at ends too."""

from cs2os_agent.common import states
from cs2os_agent.conductor import plan_events
from cs2os_agent.db import plans as plan_db

SKIPPED = "skipped"  # by preflight: a critical finding
NOT_STARTED = "not_started"  # its migration could not be created
PENDING = "pending"  # a draft plan's VM
COUNTED = (states.QUEUED, states.RUNNING, states.SUCCEEDED, states.FAILED,
           states.CANCELLED, SKIPPED, NOT_STARTED, PENDING)
FINAL = states.FINAL + (SKIPPED, NOT_STARTED)


def _row(item, migration, plan_state):
    preflight = item.get("preflight")
    row = {"vm": item["vm"], "vm_id": item.get("vm_id"),
           "vm_name": item.get("vm_name"),
           "overrides": item.get("overrides") or {},
           "migration_id": item.get("migration_id"), "state": None,
           "step": None, "error": None, "bytes_done": 0, "bytes_total": 0,
           "preflight": preflight}
    if item.get("starting"):
        # start() has not reached it yet: neither skipped nor not started
        # (a plan must not be done before its start has gone through it).
        row["state"] = PENDING
    elif migration is not None:
        row.update({k: migration.get(k) for k in (
            "state", "step", "error", "bytes_done", "bytes_total")})
    elif item.get("error"):
        row.update(state=NOT_STARTED, error=item["error"])
    elif preflight is not None and not preflight.get("ok", True) \
            and plan_state != "draft":
        critical = [f["message"] for f in preflight.get("findings") or []
                    if f.get("severity") == "critical"]
        row.update(state=SKIPPED, error="skipped by preflight: %s"
                   % "; ".join(critical))
    else:
        row["state"] = PENDING
    return row


def _count(state):
    # cancelling and rolling_back are still running.
    return state if state in COUNTED else states.RUNNING


def refresh(db, plan):
    """Move a running plan whose VMs are all final to ``done`` and record
    the ends (and ``done``) its log lacks: (the plan as it is now, its
    per-VM rows).  Idempotent, and safe for two conductors at once: an
    end has a dedupe key in the log, and only the caller whose update
    moved the plan to done records (and notifies) ``done``."""
    migrations = {m["id"]: m for m in db.list_migrations(
        {"plan_id": plan["id"]})}
    vms = [_row(i, migrations.get(i.get("migration_id")), plan["state"])
           for i in plan["items"]]
    done = None
    if plan["state"] == "running" and all(r["state"] in FINAL for r in vms):
        done = plan_db.update(db, plan["id"], {"state": "done"},
                              expect_state="running")
        plan = done or plan_db.get(db, plan["id"])
    if plan["state"] != "draft":
        plan_events.catch_up(db, plan, vms, migrations, done is not None)
    return plan, vms


def view(db, plan, rows=True):
    """The plan as the API shows it; ``rows``: with its per-VM rows."""
    plan, vms = refresh(db, plan)
    counts = dict.fromkeys(COUNTED, 0)
    for row in vms:
        counts[_count(row["state"])] += 1
    body = {k: plan.get(k) for k in (
        "id", "name", "state", "user_id", "project_id", "defaults",
        "selector", "limits", "created_at", "updated_at")}
    body.update(
        counts=counts, vm_count=len(vms),
        bytes_done=sum(r["bytes_done"] or 0 for r in vms),
        bytes_total=sum(r["bytes_total"] or 0 for r in vms),
        failed=[{"vm": r["vm_name"] or r["vm"], "migration_id":
                 r["migration_id"], "error": r["error"]}
                for r in vms if r["state"] in (states.FAILED, NOT_STARTED)])
    if rows:
        body["vms"] = vms
        body["events"] = plan_db.events(db, plan["id"])
    return body
