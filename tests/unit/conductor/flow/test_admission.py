"""Which slots a migration needs, and how it waits for them (the slots
themselves, on real databases: tests/functional/test_slots.py)."""

import types

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import admission

VM = {"host": {"id": "kvm-1", "name": "kvm01"},
      "root_volume": {"storage": {"id": "pool-1"}}}


def conf(**limits):
    options = dict(max_in_flight=0, max_per_compute_host=0,
                   max_per_kvm_host=0, max_per_pool=0)
    options.update(limits)
    return types.SimpleNamespace(conductor=types.SimpleNamespace(**options))


def test_only_the_limited_resources_take_a_slot():
    assert admission.limits(conf(), {"target_host": "cmp-1"}, VM) == {}
    assert admission.limits(
        conf(max_in_flight=10, max_per_compute_host=3, max_per_kvm_host=2,
             max_per_pool=4), {"target_host": "cmp-1"}, VM) == {
        "all": 10, "compute:cmp-1": 3, "kvm:kvm-1": 2, "pool:pool-1": 4}
    # The scheduler picks the host: no compute host slot to take.
    assert admission.limits(conf(max_per_compute_host=3),
                            {"target_host": None}, VM) == {}


class Ctx:
    def __init__(self, answers, cancel_after=None):
        self.conf = conf(max_per_kvm_host=1)
        self.migration = {"target_host": None}
        self.id = "m2"
        self.events = []
        self.checks = 0
        self.cancel_after = cancel_after
        self.saved = []
        self.db = types.SimpleNamespace(
            acquire_slots=lambda mid, wanted: answers.pop(0),
            slot_holders=lambda resource: ["m1"])

    def guard(self):
        pass

    def save(self, **values):
        self.saved.append(values)

    def event(self, step, message):
        self.events.append(message)

    def check_cancelled(self, step):
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise exception.MigrationCancelled(migration_id=self.id)


def test_it_waits_says_for_what_once_and_goes_on():
    ctx = Ctx(["kvm:kvm-1", "kvm:kvm-1", None])
    admission.admit(ctx, VM, poll=0)
    assert ctx.events[0] == ("waiting for a slot: kvm:kvm-1 is at its "
                             "limit of 1 migrations in flight (m1)")
    assert ctx.events[1].startswith("a slot is free: going on after")
    assert len(ctx.events) == 2 and ctx.checks == 2
    # What it waited for was on the record while it waited, then cleared.
    assert ctx.saved == [{"waiting_for": "kvm:kvm-1"},
                         {"waiting_for": None}]


def test_a_plan_caps_its_own_migrations_besides_the_global_limits():
    migration = {"target_host": "cmp-1", "plan_id": "p1"}
    assert admission.limits(
        conf(max_per_kvm_host=2), migration, VM,
        {"max_per_compute_host": 3, "max_in_flight": 5}) == {
        "kvm:kvm-1": 2, "plan:p1/compute:cmp-1": 3, "plan:p1/all": 5}
    # Not a plan's: its caps do not apply.
    assert admission.limits(conf(), {"target_host": "cmp-1"}, VM,
                            {"max_in_flight": 5}) == {}
    # A resource name that would not fit the slots table is hashed.
    name = admission.plan_resource("p1", "compute:" + "h" * 300)
    assert len(name) <= 300 and name.startswith("plan:p1/")


def test_a_cancel_ends_the_wait():
    ctx = Ctx(["kvm:kvm-1"] * 5, cancel_after=2)
    with pytest.raises(exception.MigrationCancelled):
        admission.admit(ctx, VM, poll=0)


def test_no_limit_no_wait():
    ctx = Ctx([])
    ctx.conf = conf()
    admission.admit(ctx, VM, poll=0)
    assert ctx.events == []
