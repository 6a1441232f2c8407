"""How a migration waiting for a slot hears of one (flow/admission.py):
a lost insert race names the resource and its limit; a migration of the
same conductor ending wakes the waiter without its poll."""

import threading
import time

from cs2os_agent.conductor.flow import admission
from cs2os_agent.db import api as db_api
from tests.unit.conductor.flow.test_admission import VM
from tests.unit.conductor.flow.test_admission import Ctx


def test_a_lost_race_names_the_resource_and_its_limit():
    race = db_api.SlotRace("pool:p1", 7)
    ctx = Ctx([race, None])
    admission.admit(ctx, VM, poll=0)
    assert ctx.events[0] == (
        "waiting for a slot: pool:p1 (limit 7): another conductor took the "
        "free slot at the same moment; looking again")
    assert ctx.saved[0] == {"waiting_for": "pool:p1"}


def test_a_migration_of_this_conductor_ending_wakes_a_waiter_at_once():
    ctx = Ctx(["kvm:kvm-1", None])
    waiter = threading.Thread(target=admission.admit,
                              args=(ctx, VM), kwargs={"poll": 60})
    started = time.monotonic()
    waiter.start()
    while not ctx.events:
        time.sleep(0.01)
    admission.slots_freed()
    waiter.join(10)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 5  # not the 60 s poll
    assert ctx.events[1].startswith("a slot is free")
