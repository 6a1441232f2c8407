"""A live migration request (conductor/request.py), what the manager
records of it, and what a dry run (preflight.py) says of live mode's
refusals."""

import types

import pytest

from cs2os_agent.common import context
from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import plan_input
from cs2os_agent.conductor import preflight
from cs2os_agent.conductor import request
from cs2os_agent.conductor.flow import livesteps
from tests.unit.conductor import helpers


def test_a_live_request_gets_warm_defaults_and_no_fallback():
    req = request.validate({"source": "vm", "mode": "live"})
    assert req["mode"] == "live"
    assert req["live_fallback"] is False
    # They apply once a refusal fell back to warm mode.
    assert (req["cutover"], req["cutover_method"]) == ("auto", "shutdown")
    req = request.validate({"source": "vm", "mode": "live",
                            "live_fallback": True, "cutover": "manual"})
    assert req["live_fallback"] is True and req["cutover"] == "manual"
    assert "live_fallback" not in request.validate({"source": "vm",
                                                    "mode": "warm"})


@pytest.mark.parametrize("bad, words", [
    ({"mode": "live", "live_fallback": "yes"}, "live_fallback must be a bool"),
    ({"live_fallback": True},
     "live_fallback applies to live migrations only (mode is cold)"),
    ({"mode": "warm", "live_fallback": False},
     "live_fallback applies to live migrations only (mode is warm)"),
    ({"mode": "live", "keep_snapshots": True},
     "keep_snapshots applies to cold migrations only: a live migration"),
    ({"mode": "live", "cutover_window": {"start": "2030-01-01T00:00:00Z",
                                         "end": "2030-01-01T01:00:00Z"}},
     "(mode is live): a live migration has no cutover window yet"),
])
def test_bad_live_requests_name_the_problem(bad, words):
    with pytest.raises(exception.Invalid) as err:
        request.validate(dict(bad, source="vm"))
    assert words in str(err.value)


def test_a_plan_default_may_say_live_with_its_fallback():
    assert "live_fallback" in plan_input.FIELDS
    merged = plan_input.merge({"mode": "live", "live_fallback": True}, {})
    assert request.validate(dict(merged, source="vm"))["live_fallback"]


def test_the_manager_records_the_fallback_in_the_options(db):
    mgr = manager.ConductorManager(db, helpers.Engine())
    record = mgr.create_migration(
        context.RequestContext(user_id="u", project_id="p"),
        {"source": "vm", "mode": "live", "live_fallback": True})
    row = db.get_migration(record["id"])
    assert row["mode"] == "live"
    assert row["options"]["live_fallback"] is True


def test_a_repeated_request_matches_a_migration_that_fell_back(db):
    mgr = manager.ConductorManager(db, helpers.Engine())
    ctxt = context.RequestContext(user_id="u", project_id="p")
    ask = {"source": "vm", "mode": "live", "live_fallback": True,
           "idempotency_key": "k-1"}
    first = mgr.create_migration(ctxt, ask)
    db.update_migration(first["id"], {"mode": "warm", "result": {
        "live_fallback": {"from": "live", "to": "warm", "reason": "x"}}})
    assert mgr.create_migration(ctxt, ask)["id"] == first["id"]
    with pytest.raises(exception.IdempotencyKeyReused):
        mgr.create_migration(ctxt, dict(ask, mode="cold",
                                        live_fallback=None))


@pytest.mark.parametrize("fallback, severity", [(False, "critical"),
                                                (True, "warning")])
def test_a_dry_run_names_the_live_refusals(fallback, severity):
    vm = {"name": "web-1", "datadisks": [{"id": "d"}],
          "root_volume": {"storage": {"type": "RBD"}}}
    options = {"cutover": "manual", "live_fallback": fallback}
    ctx = types.SimpleNamespace(migration={"mode": "live",
                                           "options": options})
    out = preflight.Report({"source": "web-1", "mode": "live"})
    preflight._live(ctx, out, vm, types.SimpleNamespace(layers=[]))
    found = out.body["findings"]
    assert [f["check"] for f in found] == ["live"] * 3
    assert {f["severity"] for f in found} == {severity}
    assert "data disks are not supported in live mode yet" in \
        found[0]["message"]
    assert "RBD" in found[1]["message"]
    assert "cutover manual" in found[2]["message"]
    assert all(("would fall back to warm mode" in f["message"]) == fallback
               for f in found)
    assert livesteps.reasons({"name": "x"}, [], [], {}) == []
