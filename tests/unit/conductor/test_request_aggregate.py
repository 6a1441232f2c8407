"""A request's (and a plan's) ``aggregate``: a Nova host aggregate to pick
the host from, instead of ``host``."""

import types

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import plan_input
from cs2os_agent.conductor import plans
from cs2os_agent.conductor import request
from tests.unit.conductor.helpers import CTXT


def test_aggregate_is_checked_and_kept():
    checked = request.validate({"source": "vm", "aggregate": " wave-3 "})
    assert checked["aggregate"] == "wave-3" and checked["host"] is None
    assert request.validate({"source": "vm"})["aggregate"] is None


@pytest.mark.parametrize("bad, reason", [
    ({"host": "cmp-1", "aggregate": "wave-3"},
     "host and aggregate exclude each other"),
    ({"aggregate": " "}, r"aggregate \(the Nova host aggregate id or "
     r"name\) must be 1 to 255 printable characters, not blank"),
    ({"aggregate": "a\u200bb"}, "printable"),
    ({"aggregate": 3}, "aggregate must be a str"),
])
def test_bad_aggregates_are_refused_naming_the_field(bad, reason):
    with pytest.raises(exception.Invalid, match=reason):
        request.validate(dict(bad, source="vm"))


def test_a_vm_override_of_host_replaces_the_plans_aggregate():
    defaults = plan_input.fields({"aggregate": "wave-3"}, "defaults")
    items = plan_input.items(["a", {"vm": "b", "overrides": {
        "host": "cmp-9"}}], defaults)
    plan = {"defaults": defaults}
    assert plans.request_for(plan, items[0]) == {
        "aggregate": "wave-3", "source": "a"}
    assert plans.request_for(plan, items[1]) == {
        "host": "cmp-9", "source": "b"}
    # And the other way round.
    plan = {"defaults": plan_input.fields({"host": "cmp-1"}, "defaults")}
    assert plans.request_for(plan, {"vm": "c", "overrides": {
        "aggregate": "wave-4"}}) == {"aggregate": "wave-4", "source": "c"}


def test_one_override_naming_both_is_refused():
    with pytest.raises(exception.Invalid, match="overrides of b: host and "
                       "aggregate exclude each other"):
        plan_input.items([{"vm": "b", "overrides": {
            "host": "cmp-9", "aggregate": "wave-3"}}], {})


def test_the_record_keeps_it_and_a_replay_after_admission_matches(db):
    mgr = manager.ConductorManager(
        db, engine=types.SimpleNamespace(submit=lambda mid: True))
    asked = {"source": "web-1", "aggregate": "wave-3",
             "idempotency_key": "k-1"}
    first = mgr.create_migration(CTXT, dict(asked))
    assert first["target_host"] is None
    assert first["options"]["aggregate"] == "wave-3"
    # Admission chose a host: the same request is still the same one.
    db.update_migration(first["id"], {"target_host": "c2"})
    assert mgr.create_migration(CTXT, dict(asked))["id"] == first["id"]
    with pytest.raises(exception.IdempotencyKeyReused,
                       match="aggregate differ"):
        mgr.create_migration(CTXT, dict(asked, aggregate="wave-4"))
    with pytest.raises(exception.IdempotencyKeyReused,
                       match=r"\(target_host, aggregate differ\)"):
        mgr.create_migration(CTXT, {"source": "web-1", "host": "c1",
                                    "idempotency_key": "k-1"})
