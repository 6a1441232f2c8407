"""Limits on migrations in flight, across every conductor.

A migration that passed validate takes one slot of each shared resource it
will load (db Slot): the target compute host named in the request, the
CloudStack KVM host its VM runs on, the primary storage pool of its root
volume, and "all".  Each resource has as many slots as its ``[conductor]
max_*`` option says (0: no limit, no slot).  When one has none free, the
migration waits in validate, cancellable, and says for what; it goes on
when a migration holding one ends (a final state frees its slots).  Nothing
exists in either cloud yet while it waits.
"""

import time

POLL_SECONDS = 5


def limits(conf, migration, vm):
    """{resource: limit} of the slots ``migration`` of ``vm`` needs."""
    options = conf.conductor
    wanted = {}
    if options.max_in_flight:
        wanted["all"] = options.max_in_flight
    host = migration.get("target_host")
    if host and options.max_per_compute_host:
        wanted["compute:%s" % host] = options.max_per_compute_host
    kvm = vm.get("host") or {}
    kvm_id = kvm.get("id") or kvm.get("name")
    if kvm_id and options.max_per_kvm_host:
        wanted["kvm:%s" % kvm_id] = options.max_per_kvm_host
    pool = ((vm.get("root_volume") or {}).get("storage") or {}).get("id")
    if pool and options.max_per_pool:
        wanted["pool:%s" % pool] = options.max_per_pool
    return wanted


def admit(ctx, vm, poll=None):
    """Wait until the migration holds a slot of each resource it needs."""
    wanted = limits(ctx.conf, ctx.migration, vm)
    if not wanted:
        return
    waited = None
    while True:
        ctx.guard()
        full = ctx.db.acquire_slots(ctx.id, wanted)
        if full is None:
            if waited is not None:
                ctx.event("validate", "a slot is free: going on after "
                          "%.0f s" % (time.monotonic() - waited))
            return
        if waited is None:
            waited = time.monotonic()
            ctx.event("validate", _waiting(ctx, full, wanted))
        ctx.check_cancelled("validate")
        time.sleep(POLL_SECONDS if poll is None else poll)


def _waiting(ctx, full, wanted):
    if full not in wanted:  # another conductor's insert won the race
        return "waiting for a slot: %s" % full
    return ("waiting for a slot: %s is at its limit of %d migrations in "
            "flight (%s)" % (full, wanted[full],
                             ", ".join(ctx.db.slot_holders(full))))
