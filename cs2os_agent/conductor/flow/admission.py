"""Limits on migrations in flight, across every conductor.

A migration that passed validate takes one slot of each shared resource it
will load (db Slot): the target compute host named in the request, the
CloudStack KVM host its VM runs on, the primary storage pool of its root
volume, and "all".  Each resource has as many slots as its ``[conductor]
max_*`` option says (0: no limit, no slot).  When one has none free, the
migration waits in validate, cancellable, and says for what; it goes on
when a migration holding one ends (a final state frees its slots).  Nothing
exists in either cloud yet while it waits.

A plan's ``limits`` (same names as the options) cap its own migrations in
addition: resources "plan:<plan id>/<resource>", counted over the plan's
migrations only.  The [conductor] limits still count everyone's, so the
stricter of the two binds: a plan can narrow what the operator set for
the whole cloud, not lift it.  Within a plan, waiters go in plan order: a
migration does not take a slot of a resource an earlier VM of its plan
waits for (migrations.waiting_for), so queued plan work starts in order
as slots free up.

A waiter looks again as soon as a migration of its own conductor ends
(slots_freed(), from the engine: same process), and every POLL_SECONDS
for slots another conductor's migrations freed.
"""

import functools
import hashlib
import threading
import time

from cs2os_agent.conductor.flow import placement as host_placement
from cs2os_agent.db import api as db_api
from cs2os_agent.db import placement as placement_db
from cs2os_agent.db import plans as plan_db

POLL_SECONDS = 3
_freed = threading.Condition()
_generation = 0  # migrations of this process that ended (their slots)


def slots_freed():
    """Wake this process's waiters: one of its migrations ended."""
    global _generation
    with _freed:
        _generation += 1
        _freed.notify_all()


def _generation_now():
    with _freed:
        return _generation


def _pause(seconds, seen):
    """Sleep ``seconds`` or until a migration ends after ``seen``."""
    with _freed:
        _freed.wait_for(lambda: _generation != seen, timeout=seconds)
LIMIT_NAMES = ("max_in_flight", "max_per_compute_host", "max_per_kvm_host",
               "max_per_pool")
_RESOURCE_LENGTH = 300  # slots.resource


def _resources(migration, vm, values):
    """{resource: limit} for ``values`` ({option name: limit})."""
    wanted = {}
    if values.get("max_in_flight"):
        wanted["all"] = values["max_in_flight"]
    host = migration.get("target_host")
    if host and values.get("max_per_compute_host"):
        wanted["compute:%s" % host] = values["max_per_compute_host"]
    kvm = vm.get("host") or {}
    kvm_id = kvm.get("id") or kvm.get("name")
    if kvm_id and values.get("max_per_kvm_host"):
        wanted["kvm:%s" % kvm_id] = values["max_per_kvm_host"]
    pool = ((vm.get("root_volume") or {}).get("storage") or {}).get("id")
    if pool and values.get("max_per_pool"):
        wanted["pool:%s" % pool] = values["max_per_pool"]
    return wanted


def plan_resource(plan_id, resource):
    """The slot resource of a plan's own cap on ``resource``."""
    name = "plan:%s/%s" % (plan_id, resource)
    if len(name) > _RESOURCE_LENGTH:  # a very long host name
        name = "plan:%s/%s" % (plan_id, hashlib.sha256(
            resource.encode()).hexdigest())
    return name


def limits(conf, migration, vm, plan_limits=None):
    """{resource: limit} of the slots ``migration`` of ``vm`` needs; with
    ``plan_limits`` (its plan's) the plan's own caps too."""
    options = conf.conductor
    wanted = _resources(migration, vm, {
        name: getattr(options, name) for name in LIMIT_NAMES})
    plan_id = migration.get("plan_id")
    if plan_id and plan_limits:
        for resource, limit in _resources(migration, vm,
                                          plan_limits).items():
            wanted[plan_resource(plan_id, resource)] = limit
    return wanted


def _plan_limits(ctx):
    plan_id = ctx.migration.get("plan_id")
    if not plan_id:
        return None
    try:
        return plan_db.get(ctx.db, plan_id).get("limits")
    except plan_db.PlanNotFoundError:
        return None  # deleted: its caps went with it


def admit(ctx, vm, poll=None, placement=None):
    """Wait until the migration holds a slot of each resource it needs;
    with ``placement`` (flow/placement.py: a request for a host
    aggregate) on one of its usable hosts, which becomes the migration's
    target_host with its slots."""
    plan_limits = _plan_limits(ctx)
    if placement is not None:
        take, keys = _on_aggregate(ctx, vm, placement, plan_limits)
    else:
        wanted = limits(ctx.conf, ctx.migration, vm, plan_limits)
        if not wanted:
            return
        keys = wanted

        def take():
            full = ctx.db.acquire_slots(ctx.id, wanted)
            return full, lambda: _waiting(ctx, full, wanted)
    waited = None
    said = None
    while True:
        ctx.guard()
        # Before looking: a migration ending after this wakes the pause.
        seen = _generation_now()
        ahead = _earlier_waiter(ctx, keys)
        if ahead:
            full, message = ahead[1], functools.partial(
                _waiting, ctx, ahead[1], {}, ahead)
        else:
            # message: said only when what it waits for changes.
            full, message = take()
        if full is None:
            if waited is not None:
                ctx.save(waiting_for=None)
                ctx.event("validate", "a slot is free: going on after "
                          "%.0f s" % (time.monotonic() - waited))
            return
        if waited is None:
            waited = time.monotonic()
        if said != full:
            said = full
            ctx.save(waiting_for=str(full))
            ctx.event("validate", message())
        ctx.check_cancelled("validate")
        _pause(POLL_SECONDS if poll is None else poll, seen)


def _on_aggregate(ctx, vm, placement, plan_limits):
    """(take, the resources a later VM of the plan waits behind) of a
    migration placed on ``placement``'s hosts."""
    def limits_for(host):
        return limits(ctx.conf, dict(ctx.migration, target_host=host), vm,
                      plan_limits)
    shared = limits_for(None)
    key = host_placement.waiting_key(placement)

    def take():
        try:
            host = placement_db.acquire(ctx.db, ctx.id, placement.usable,
                                        limits_for, expect=_claim(ctx))
        except placement_db.Fenced:
            ctx.fence()
            ctx.guard()  # raises LeaseLost
            raise
        except placement_db.AllFull as full:
            return _aggregate_full(ctx, placement, full.blocked, shared,
                                   limits_for, key)
        if isinstance(host, db_api.SlotRace):
            return host, lambda: _waiting(ctx, host, {})
        if ctx.migration.get("target_host") != host:
            ctx.migration["target_host"] = host
            ctx.event("validate", "placed on host %s of host aggregate %s"
                      % (host, placement.name))
        return None, None
    return take, dict(shared, **{key: 0})


def _claim(ctx):
    """The claim a write must still match, as ctx.save() checks it (a
    stand-in context without claims: None)."""
    claim = getattr(ctx, "claim", None)
    return claim() if claim else None


def _aggregate_full(ctx, placement, blocked, shared, limits_for, key):
    """(waiting_for, event) when no host of the aggregate has room: the
    aggregate when each host's own cap binds, else the shared resource
    (max_in_flight, a KVM host, a pool) that does."""
    common = [r for r in blocked.values() if r in shared]
    if common:
        return common[0], lambda: _waiting(ctx, common[0], shared)
    caps = sorted({limits_for(h)[r] for h, r in blocked.items()})
    return key, lambda: (
        "waiting for a slot: every usable host of host aggregate %s is at "
        "its limit of %s migrations in flight (%s)" % (
            placement.name, "/".join(map(str, caps)), "; ".join(
                "%s: %s" % (h, ", ".join(ctx.db.slot_holders(r)) or "-")
                for h, r in sorted(blocked.items()))))


def _earlier_waiter(ctx, wanted):
    """(migration id, resource) of an earlier VM of the plan waiting for
    a resource this one needs, else None."""
    plan_id = ctx.migration.get("plan_id")
    mine = (ctx.migration.get("options") or {}).get("plan_position")
    if not plan_id or mine is None:
        return None
    for other, options, resource in plan_db.waiting_for(ctx.db, plan_id,
                                                        wanted):
        position = (options or {}).get("plan_position")
        if other != ctx.id and position is not None and position < mine:
            return other, resource
    return None


def _waiting(ctx, full, wanted, ahead=None):
    if ahead:
        return ("waiting for a slot: %s, after migration %s (earlier in "
                "the plan)" % (full, ahead[0]))
    if isinstance(full, db_api.SlotRace):
        return ("waiting for a slot: %s (limit %d): another conductor "
                "took the free slot at the same moment; looking again"
                % (full, full.limit))
    return ("waiting for a slot: %s is at its limit of %d migrations in "
            "flight (%s)" % (full, wanted[full],
                             ", ".join(ctx.db.slot_holders(full))))
