"""Plans: a named set of migrations with shared defaults.

A plan holds its VMs in order, each with optional overrides of the plan's
defaults (the fields a create_migration request takes).  ``validate``
runs the preflight (conductor/preflight.py) of every VM and records its
findings; ``start`` creates one migration per VM whose preflight found
nothing critical, in plan order, through the manager's create_migration
path (every check and the [conductor] max_* limits apply; the limits
pace them).  A VM whose migration cannot be created or fails never stops
the others.  The plan is ``done`` once every migration is final.
"""

import functools

from oslo_log import log as logging
from oslo_utils import uuidutils

from cs2os_agent import conf
from cs2os_agent.cloudstack import client as cloudstack_client
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import plan_events
from cs2os_agent.conductor import plan_input
from cs2os_agent.conductor import plan_view
from cs2os_agent.conductor import request as request_schema
from cs2os_agent.db import plans as plan_db

LOG = logging.getLogger(__name__)

DRAFT, RUNNING, DONE, CANCELLED = "draft", "running", "done", "cancelled"
PLAN_STATES = (DRAFT, RUNNING, DONE, CANCELLED)

# In common/exception.py, which oslo.messaging re-creates remote errors
# from: the API answers them by their code like every other.
PlanNotFound = exception.PlanNotFound
PlanSelectsNothing = exception.PlanSelectsNothing
PlanStateConflict = exception.PlanStateConflict


@functools.lru_cache(maxsize=1)
def _cloudstack():
    return cloudstack_client.CloudStackClient.from_conf(conf.CONF)


def default_select_vms(selector):
    """The VMs a selector names, through [cloudstack]'s client."""
    return _cloudstack().select_vms(selector)


def _invalid(reason):
    return exception.Invalid(reason=reason)


def create(mgr, context, body):
    """Record a plan (state draft) from ``body``: {"name", "defaults",
    "vms": [ref or {"vm", "overrides"}], "selector": {...}}; a selector
    is resolved now, into VMs after the listed ones."""
    if not isinstance(body, dict):
        raise _invalid("a plan must be an object")
    unknown = sorted(set(body) - set(plan_input.PLAN_KEYS))
    if unknown:
        raise _invalid("unknown plan field(s) %s; known: %s" % (
            ", ".join(map(str, unknown)), ", ".join(plan_input.PLAN_KEYS)))
    name = plan_input.name(body.get("name"), "name")
    defaults = dict(body.get("defaults") or {})
    if body.get("start_at") is not None:
        # The plan's start time is its VMs' default one.
        if defaults.get("start_at") is not None:
            raise _invalid("start_at is given twice: in the plan and in "
                           "its defaults")
        defaults["start_at"] = body["start_at"]
    defaults = plan_input.fields(defaults, "defaults")
    limits = plan_input.limits(body.get("limits"))
    items = plan_input.items(body.get("vms") or [], defaults)
    selector = None
    _resolve(mgr, items)
    if body.get("selector") is not None:
        selector = plan_input.selector(body["selector"])
        for vm in mgr.select_vms(selector):
            items.append({"vm": vm.get("name") or vm["id"],
                          "vm_id": vm["id"], "vm_name": vm.get("name"),
                          "overrides": {}})
    seen = {}
    unique = []
    for item in items:
        key = item.get("vm_id") or item["vm"]
        if key in seen:
            if seen[key]["overrides"] != item["overrides"]:
                raise _invalid("VM %s is in the plan twice" % item["vm"])
            continue  # a listed VM the selector finds again
        seen[key] = item
        unique.append(dict(item, migration_id=None, preflight=None))
    if not unique and selector:
        raise PlanSelectsNothing(selector=", ".join(
            "%s=%s" % kv for kv in sorted(selector.items())))
    if not unique:
        raise _invalid("a plan needs at least one VM: vms, or a selector")
    if len(unique) > plan_input.MAX_VMS:
        raise _invalid("a plan holds at most %d VMs" % plan_input.MAX_VMS)
    plan = plan_db.create(mgr.db, {
        "id": uuidutils.generate_uuid(), "name": name, "state": DRAFT,
        "user_id": context.user_id, "project_id": context.project_id,
        "defaults": defaults, "selector": selector, "items": unique,
        "limits": limits})
    LOG.info("Plan %s (%s) of %d VMs created by %s", plan["id"], name,
             len(unique), context.user_id)
    plan_events.record(mgr.db, plan["id"], plan_events.CREATED,
                       "plan %s of %d VMs created by %s" % (
                           name, len(unique), context.user_id))
    return plan_view.view(mgr.db, plan)


def _resolve(mgr, items):
    """The listed VMs' ids and names: from one listing of every VM (a
    plan may name hundreds), else one lookup each (an ambiguous or
    unknown one stays unresolved: its preflight names the problem)."""
    if not items:
        return
    try:
        listed = mgr.select_vms({})
    except Exception as exc:  # noqa: BLE001 - one lookup each instead
        LOG.warning("Listing CloudStack VMs failed: %s",
                    exception.describe(exc))
        listed = []
    by_id = {vm["id"]: vm for vm in listed}
    by_name = {}
    for vm in listed:
        by_name.setdefault(vm.get("name"), []).append(vm)
    for item in items:
        ref = item["vm"]
        named = by_name.get(ref, [])
        vm = by_id.get(ref.lower()) or (named[0] if len(named) == 1
                                        else None)
        if vm is None and len(named) < 2:
            vm = _find(mgr, ref)
        if vm is not None:
            item.update(vm_id=vm["id"], vm_name=vm.get("name"))


def _find(mgr, ref):
    if mgr.find_vm is None:
        return None
    try:
        return mgr.find_vm(ref)
    except exception.Cs2osException as exc:
        LOG.info("Plan VM %s not resolved: %s", ref, exc)
        return None


def get(mgr, plan_id):
    try:
        return plan_db.get(mgr.db, plan_id)
    except plan_db.PlanNotFoundError:
        raise PlanNotFound(plan_id=plan_id) from None


def show(mgr, plan_id):
    return plan_view.view(mgr.db, get(mgr, plan_id))


def list_plans(mgr, filters=None):
    filters = dict(filters or {})
    unknown = sorted(set(filters) - {"name", "state", "project_id"})
    if unknown:
        raise _invalid("unknown filter(s) %s; known: name, state, "
                       "project_id" % ", ".join(unknown))
    return [plan_view.view(mgr.db, p, rows=False)
            for p in plan_db.list_(mgr.db, filters)]


def request_for(plan, item, **extra):
    """The create_migration request of one of the plan's VMs."""
    request = plan_input.merge(plan["defaults"],
                               item.get("overrides") or {})
    request.update(extra, source=item.get("vm_id") or item["vm"])
    return request


def _preflight(mgr, plan, item):
    """The item's preflight result: ok, summary, findings, estimate."""
    try:
        req = request_schema.validate(request_for(plan, item, dry_run=True))
        report = mgr.preflight(req)
    except Exception as exc:  # noqa: BLE001 - one VM never stops the plan
        LOG.warning("Plan %s: preflight of %s failed", plan["id"],
                    item["vm"], exc_info=True)
        return {"ok": False, "summary": "1 critical, 0 warnings",
                "findings": [{"check": "preflight", "severity": "critical",
                              "message": exception.describe(exc)}]}
    vm = (report.get("plan") or {}).get("vm") or {}
    if vm.get("id"):
        item.update(vm_id=vm["id"], vm_name=vm.get("name"))
    return {"ok": report["ok"], "summary": report["summary"],
            "findings": report["findings"],
            "estimate": (report.get("plan") or {}).get("estimate")}


def validate(mgr, context, plan_id):
    """Run every VM's preflight and record the findings (draft only)."""
    if mgr.preflight is None:
        raise _invalid("this conductor cannot run a preflight")
    plan = get(mgr, plan_id)
    if plan["state"] != DRAFT:
        raise PlanStateConflict(plan_id=plan_id, state=plan["state"],
                                action="validate (only a draft plan can "
                                "be)")
    items = [dict(i) for i in plan["items"]]
    for item in items:
        item["preflight"] = _preflight(mgr, plan, item)
    LOG.info("Plan %s validated by %s", plan_id, context.user_id)
    view = _save(mgr, plan, {"items": items}, DRAFT, "validate")
    critical = [i.get("vm_name") or i["vm"] for i in items
                if not i["preflight"].get("ok", True)]
    plan_events.record(mgr.db, plan_id, plan_events.VALIDATED, "validated "
                       "by %s: %d of %d VMs have a critical finding%s" % (
                           context.user_id, len(critical), len(items),
                           " (%s)" % ", ".join(critical) if critical
                           else ""))
    return view


def _save(mgr, plan, values, expect, action):
    saved = plan_db.update(mgr.db, plan["id"], values, expect_state=expect)
    if saved is None:
        current = get(mgr, plan["id"])
        raise PlanStateConflict(plan_id=plan["id"], state=current["state"],
                                action=action)
    return plan_view.view(mgr.db, saved)


def start(mgr, context, plan_id):
    """Create the migrations of a draft plan, in plan order; a VM with a
    critical preflight finding (run now if the plan was not validated)
    is skipped."""
    plan = get(mgr, plan_id)
    if plan["state"] != DRAFT:
        raise PlanStateConflict(plan_id=plan_id, state=plan["state"],
                                action="start (only a draft plan can be)")
    if any(i.get("preflight") is None for i in plan["items"]):
        validate(mgr, context, plan_id)
        plan = get(mgr, plan_id)
    # Each VM is "starting" until the loop below has been through it: a
    # conductor ending one of the plan's migrations meanwhile
    # (plan_watch.py) must not find the plan done before its last VMs are
    # skipped or started.
    items = [dict(i, starting=True) for i in plan["items"]]
    # Running from here on: a second start is refused, not run twice.
    _save(mgr, plan, {"state": RUNNING, "items": items}, DRAFT, "start")
    plan_events.record(mgr.db, plan_id, plan_events.STARTED,
                       "started by %s" % context.user_id)
    for position, item in enumerate(items):
        _start_one(mgr, context, plan, item, position)
        item.pop("starting")
        plan_db.update(mgr.db, plan_id, {"items": items})
    LOG.info("Plan %s started by %s", plan_id, context.user_id)
    # The view catches the plan up: a plan whose VMs were all skipped or
    # not started, or whose migrations ended during the loop (before
    # their ids were saved, so their conductor's catch-up missed them),
    # is done now, its ends and done recorded and notified.
    return plan_view.view(mgr.db, get(mgr, plan_id))


def _start_one(mgr, context, plan, item, position):
    """Create the migration of one VM of a starting plan (or say why
    not), recording the plan's event."""
    name = item.get("vm_name") or item["vm"]
    preflight = item.get("preflight") or {}
    if not preflight.get("ok", True):
        critical = [f["message"] for f in preflight.get("findings") or []
                    if f.get("severity") == "critical"]
        plan_events.record(mgr.db, plan["id"], plan_events.SKIPPED,
                           "VM %s skipped by preflight: %s" % (
                               name, "; ".join(critical)), vm=item["vm"])
        return
    try:
        req = request_schema.validate(request_for(plan, item))
        migration = mgr._create_planned(context, req, plan["id"],
                                        position=position)
    except exception.Cs2osException as exc:
        item["error"] = "not started: %s" % exception.describe(exc)
        plan_events.record(mgr.db, plan["id"], plan_events.NOT_STARTED,
                           "VM %s %s" % (name, item["error"]),
                           vm=item["vm"])
        return
    item["migration_id"] = migration["id"]
    start_at = (migration.get("options") or {}).get("start_at")
    plan_events.record(
        mgr.db, plan["id"], plan_events.MIGRATION_CREATED,
        "VM %s: migration %s created%s" % (
            name, migration["id"], ", queued until %s (start_at)"
            % start_at if start_at else ""),
        vm=item["vm"], migration_id=migration["id"])


def _migrations(mgr, plan_id):
    return mgr.db.list_migrations({"plan_id": plan_id})


def cancel(mgr, context, plan_id):
    """Cancel the plan's active migrations; the plan is cancelled."""
    plan = get(mgr, plan_id)
    if plan["state"] not in (DRAFT, RUNNING):
        raise PlanStateConflict(plan_id=plan_id, state=plan["state"],
                                action="cancel")
    _save(mgr, plan, {"state": CANCELLED}, plan["state"], "cancel")
    active = [m for m in _migrations(mgr, plan_id)
              if m["state"] in states.ACTIVE]
    plan_events.record(mgr.db, plan_id, plan_events.CANCELLED,
                       "cancelled by %s: %d active migration(s) to cancel"
                       % (context.user_id, len(active)))
    for migration in active:
        if migration["state"] in states.ACTIVE:
            try:
                mgr.cancel_migration(context, migration["id"])
            except exception.Cs2osException as exc:
                LOG.info("Plan %s: migration %s not cancelled: %s",
                         plan_id, migration["id"], exc)
    return show(mgr, plan_id)


def delete(mgr, context, plan_id):
    """Forget a plan none of whose migrations is active (they stay)."""
    get(mgr, plan_id)
    active = [m["id"] for m in _migrations(mgr, plan_id)
              if m["state"] in states.ACTIVE]
    if active:
        raise PlanStateConflict(
            plan_id=plan_id, state="running %d migration(s) (%s)" % (
                len(active), ", ".join(active)),
            action="delete (cancel it first, or wait)")
    plan_db.delete(mgr.db, plan_id)
    LOG.info("Plan %s deleted by %s", plan_id, context.user_id)


def retry(mgr, context, plan_id):
    """Retry the plan's failed migrations; the plan runs again."""
    plan = get(mgr, plan_id)
    failed = [m["id"] for m in _migrations(mgr, plan_id)
              if m["state"] == states.FAILED]
    if plan["state"] == DRAFT or not failed:
        raise PlanStateConflict(
            plan_id=plan_id, state="%s with no failed migration"
            % plan["state"] if plan["state"] != DRAFT else DRAFT,
            action="retry")
    plan_events.record(mgr.db, plan_id, plan_events.RETRIED,
                       "retry of %d failed migration(s) requested by %s "
                       "(%s)" % (len(failed), context.user_id,
                                 ", ".join(failed)))
    for migration_id in failed:
        try:
            mgr.retry_migration(context, migration_id)
        except exception.Cs2osException as exc:
            LOG.info("Plan %s: migration %s not retried: %s", plan_id,
                     migration_id, exc)
    # After the retries: a view in between would find it done again.
    if plan["state"] != RUNNING:
        plan_db.update(mgr.db, plan_id, {"state": RUNNING},
                       expect_state=plan["state"])
    return show(mgr, plan_id)
