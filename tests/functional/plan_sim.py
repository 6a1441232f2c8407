"""A fleet of fake CloudStack VMs and a fake cold flow that records when
each migration held which shared resource, for the plan simulation
(tests/functional/test_plan_simulation.py).

Only the clouds are fake: the steps keep the cold flow's names and order,
take a little time each and touch nothing; ``validate`` claims the VM and
then waits for its slots through the real admission code
(conductor/flow/admission.py), and everything around the steps (plans,
the manager, the engines, their claims, the records, the slots) is the
conductor's own code on a real database.
"""

import random
import threading
import time

from cs2os_agent.common import states
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import cold

# Every FAIL_EVERY-th VM's sync step fails: it must end failed (after its
# rollback) without holding up the others.
FAIL_EVERY = 50
FAILING_STEP = "sync"


class Fleet:
    """``count`` VMs spread over compute hosts, KVM hosts and pools.

    Neighbours in plan order share a compute host (runs of 4, a wave
    planned host by host: with a limit of 3 the fourth always waits); KVM
    hosts and pools interleave, each near its limit.
    """

    def __init__(self, count, computes, kvms, pools):
        self.vms = []
        for n in range(count):
            self.vms.append({
                "id": "sim-vm-%04d" % n, "name": "sim-%04d" % n,
                "state": "Running",
                "compute": "cmp-%02d" % ((n // 4) % computes),
                "host": {"id": "kvm-%02d" % (n % kvms)},
                "root_volume": {"storage": {"id": "pool-%d" % (n % pools)}},
                "fails": n % FAIL_EVERY == FAIL_EVERY - 1,
            })
        self.by_id = {vm["id"]: vm for vm in self.vms}

    def find_vm(self, ref):
        return self.by_id[ref]

    def select_vms(self, selector):
        return list(self.vms)

    def preflight(self, request):
        vm = self.by_id[request["source"]]
        return {"ok": True, "summary": "0 critical, 0 warnings",
                "findings": [], "plan": {"vm": {"id": vm["id"],
                                                "name": vm["name"]}}}

    def resources(self, vm):
        """The slot names admission.limits gives ``vm`` (all limits on)."""
        return ["all", "compute:%s" % vm["compute"],
                "kvm:%s" % vm["host"]["id"],
                "pool:%s" % vm["root_volume"]["storage"]["id"]]


class Recorder:
    """When each migration began validate, got its slots, worked (each
    fake step's interval, monotonic seconds) and was freed."""

    def __init__(self):
        self._lock = threading.Lock()
        self.vm_of = {}  # migration id -> VM id
        self.validating = {}
        self.admitted = {}
        self.freed = {}
        self.work = {}  # migration id -> [(start, end), ...]

    def mark(self, what, migration_id, vm_id=None):
        now = time.monotonic()
        with self._lock:
            getattr(self, what).setdefault(migration_id, now)
            if vm_id is not None:
                self.vm_of[migration_id] = vm_id

    def worked(self, migration_id, start, end):
        with self._lock:
            self.work.setdefault(migration_id, []).append((start, end))

    def dump(self):
        with self._lock:
            return {name: dict(getattr(self, name)) for name in (
                "vm_of", "validating", "admitted", "freed", "work")}

    def merge(self, dumped):
        """Add another process's ``dump()`` (CLOCK_MONOTONIC is one clock
        for every process of the machine)."""
        for name, values in dumped.items():
            getattr(self, name).update(values)


class RecordingDatabase:
    """The conductor's Database, noting when a final state (which frees
    the migration's slots in the same update) was written."""

    def __init__(self, db, recorder):
        self._db = db
        self._recorder = recorder

    def __getattr__(self, name):
        return getattr(self._db, name)

    def update_migration(self, migration_id, values, expect=None):
        updated = self._db.update_migration(migration_id, values,
                                            expect=expect)
        if updated is not None and values.get("state") in states.FINAL:
            self._recorder.mark("freed", migration_id)
        return updated


class FakeColdFlow:
    """Steps of the cold flow's names that sleep ``step_ms`` (the copy
    ``sync_ms``, a range) and record their intervals."""

    def __init__(self, fleet, recorder, step_ms=(2, 6), sync_ms=(50, 150),
                 seed=17):
        self.fleet = fleet
        self.recorder = recorder
        self.step_ms = step_ms
        self.sync_ms = sync_ms
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def steps(self):
        fakes = [("validate", self.validate)]
        for name, _ in cold.STEPS[1:]:
            fakes.append((name, self._step(name)))
        return fakes

    def rollback(self):
        return [(name, self._undo(name)) for name, _ in cold.ROLLBACK]

    def install(self):
        """In a conductor process of the simulation only: runner.flow
        reads cold.STEPS and ROLLBACK at call time."""
        cold.STEPS = self.steps()
        cold.ROLLBACK = self.rollback()

    def _sleep(self, bounds):
        with self._rng_lock:
            seconds = self._rng.uniform(*bounds) / 1000.0
        time.sleep(seconds)

    def validate(self, ctx):
        vm = self.fleet.by_id[ctx.migration["source_ref"]]
        self.recorder.mark("validating", ctx.id, vm["id"])
        ctx.save(source={"id": vm["id"], "name": vm["name"]},
                 source_vm_id=vm["id"], source_vm_name=vm["name"],
                 active_source=vm["id"])
        # A waiting migration polls at the real interval: what is measured
        # is the scheduler as it ships.
        admission.admit(ctx, vm)
        self.recorder.mark("admitted", ctx.id)

    def _step(self, name):
        bounds = self.sync_ms if name == FAILING_STEP else self.step_ms

        def step(ctx):
            start = time.monotonic()
            self._sleep(bounds)
            self.recorder.worked(ctx.id, start, time.monotonic())
            vm = self.fleet.by_id[ctx.migration["source_ref"]]
            if name == FAILING_STEP and vm["fails"]:
                raise RuntimeError("injected failure of %s" % vm["name"])
        return step

    def _undo(self, name):
        def undo(ctx):
            start = time.monotonic()
            self._sleep(self.step_ms)
            self.recorder.worked(ctx.id, start, time.monotonic())
            return "%s (simulated)" % name
        return undo


def peaks(intervals_by_resource):
    """{resource: the most intervals open at one instant}; an interval
    that ends at the instant another begins does not overlap it."""
    result = {}
    for resource, intervals in intervals_by_resource.items():
        edges = sorted([(start, 1) for start, _ in intervals]
                       + [(end, -1) for _, end in intervals])
        open_now = peak = 0
        for _, delta in edges:
            open_now += delta
            peak = max(peak, open_now)
        result[resource] = peak
    return result


def handover_gaps(admitted, freed, limit):
    """Seconds from the k-th freed slot to the (limit + k)-th admission:
    while migrations wait for the total limit, each admission past the
    first ``limit`` needs one earlier end, so this is the time a freed
    slot stood empty (the scheduler's reaction time)."""
    admitted = sorted(admitted)
    freed = sorted(freed)
    return [admitted[limit + k] - freed[k]
            for k in range(min(len(freed), len(admitted) - limit))]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wait_all_final(db, count, timeout, interval=1.0):
    """The rows of ``db``'s migrations once there are ``count`` and all
    are final; an AssertionError naming those that are not after
    ``timeout`` s.  ``interval``: listing them all costs the conductors'
    CPU in a large fleet."""
    deadline = time.monotonic() + timeout
    while True:
        rows = db.list_migrations()
        if len(rows) == count and all(r["state"] in states.FINAL
                                      for r in rows):
            return rows
        if time.monotonic() >= deadline:
            raise AssertionError("%d of %d migrations exist, not final "
                                 "after %d s: %s" % (
                                     len(rows), count, timeout,
                                     [(r["id"], r["state"], r["step"])
                                      for r in rows
                                      if r["state"] not in states.FINAL][:20]))
        time.sleep(interval)
