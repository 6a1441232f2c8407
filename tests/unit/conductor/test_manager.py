"""The conductor's manager: requests, cancels, retries, the cutover action.

On a real SQLite database (``db``); the ``mgr`` fixture (conftest.py) is
given a recording engine and agent API.  The state machine's promise as the
manager keeps it: a cancel never flips a final state, committed or rolling
back; one active migration per CloudStack VM; idempotent creates.
"""

import types

import pytest

from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import context
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import manager
from tests.unit.conductor.flow.script import claim
from tests.unit.conductor.flow.script import new_migration
from tests.unit.conductor.helpers import CTXT
from tests.unit.conductor.helpers import held

OPS = context.RequestContext(user_id="ops", project_id="p1")


def test_create_records_the_request_and_its_requester(mgr):
    m = mgr.create_migration(CTXT, {"source": " vm-1 ", "host": "cmp1",
                                    "delete_source": True})
    assert (m["state"], m["step"]) == ("queued", "validate")
    assert (m["source_ref"], m["target_host"]) == ("vm-1", "cmp1")
    assert m["delete_source"] is True and m["mode"] == "cold"
    assert (m["user_id"], m["project_id"]) == ("alice", "p1")
    assert mgr.engine.submitted == [m["id"]]


def test_cancel_queued_is_immediate(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    done = mgr.cancel_migration(CTXT, m["id"])
    assert done["state"] == "cancelled"
    assert mgr.engine.cancelled == []


@pytest.mark.parametrize("step", ["sync", "sync_volumes"])
def test_cancel_during_an_agent_copy_reaches_the_agent(mgr, step):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    mgr.db.update_migration(m["id"], {"state": "running", "step": step,
                                      "resources": {"host": "cmp1"}})
    done = mgr.cancel_migration(CTXT, m["id"])
    assert done["state"] == "cancelling"
    assert mgr.engine.cancelled == [m["id"]]
    assert mgr.agent_api.cancels == [("cmp1", m["id"])]


def test_cancel_outside_a_copy_leaves_the_agent_alone(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    mgr.db.update_migration(m["id"], {"state": "running", "step": "volumes",
                                      "resources": {"host": "cmp1"}})
    assert mgr.cancel_migration(CTXT, m["id"])["state"] == "cancelling"
    assert mgr.agent_api.cancels == []


def test_finished_migrations_cannot_be_cancelled(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    mgr.db.update_migration(m["id"], {"state": "succeeded"})
    with pytest.raises(exception.MigrationStateConflict, match="succeeded"):
        mgr.cancel_migration(CTXT, m["id"])


def test_retry_only_failed_or_cancelled(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    with pytest.raises(exception.MigrationStateConflict, match="queued"):
        mgr.retry_migration(CTXT, m["id"])
    mgr.db.update_migration(m["id"], {"state": "failed", "step": "sync",
                                      "error": "boom"})
    again = mgr.retry_migration(CTXT, m["id"])
    assert (again["state"], again["step"], again["error"]) == (
        "queued", "validate", None)
    assert mgr.engine.submitted == [m["id"], m["id"]]
    assert again["events"][-1]["message"] == "retry requested by alice"


def test_progress_reports_update_the_record(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    mgr.report_progress(CTXT, m["id"], {"bytes_done": 5, "bytes_total": 9,
                                        "rate_bps": 3})
    got = mgr.get_migration(CTXT, m["id"])
    assert (got["bytes_done"], got["bytes_total"], got["rate_bps"]) == (
        5, 9, 3)
    mgr.report_progress(CTXT, "unknown", {"bytes_done": 1,
                                          "bytes_total": 1, "rate_bps": 1})


def test_list_limit_bounds(mgr):
    with pytest.raises(exception.Invalid, match="limit"):
        mgr.list_migrations(CTXT, limit=0)


# -- cancels: never a final state, nor a committed or rolling back one -----


def test_a_rollback_cannot_be_cancelled(db):
    new_migration(db, state=states.ROLLING_BACK)
    mgr = manager.ConductorManager(db, engine=None)
    with pytest.raises(exception.MigrationStateConflict,
                       match="rolling_back: cannot cancel"):
        mgr.cancel_migration(CTXT, "m1")


def test_a_cancel_after_the_commit_is_refused(db):
    new_migration(db)
    claim(db, "c1").commit()
    mgr = manager.ConductorManager(db, engine=None)
    with pytest.raises(exception.MigrationStateConflict,
                       match="committed"):
        mgr.cancel_migration(CTXT, "m1")
    assert db.get_migration("m1")["state"] == "running"


@pytest.mark.parametrize("final", states.FINAL)
def test_a_cancel_never_flips_a_final_state(db, final):
    new_migration(db, state=final)
    mgr = manager.ConductorManager(db, engine=None)
    with pytest.raises(exception.MigrationStateConflict):
        mgr.cancel_migration(CTXT, "m1")
    assert db.get_migration("m1")["state"] == final


def test_a_cancel_losing_the_race_to_success_is_a_409(db, monkeypatch):
    # The flow finishes between the cancel's read and its write.
    new_migration(db)
    mgr = manager.ConductorManager(db, engine=None)
    real_update = db.update_migration

    def finish_first(mid, values, expect=None):
        if values.get("state") == states.CANCELLING:
            real_update(mid, {"state": states.SUCCEEDED})
        return real_update(mid, values, expect)

    monkeypatch.setattr(db, "update_migration", finish_first)
    with pytest.raises(exception.MigrationStateConflict,
                       match="succeeded: cannot cancel"):
        mgr.cancel_migration(CTXT, "m1")
    assert db.get_migration("m1")["state"] == "succeeded"


# -- one migration per VM; idempotent creates ------------------------------


def make_manager(db, vms):
    """``vms``: {ref: id} CloudStack knows."""
    def find_vm(ref):
        if ref not in vms:
            raise cloudstack_errors.CloudStackVMNotFound(ref=ref)
        return {"id": vms[ref]}

    return manager.ConductorManager(
        db, engine=types.SimpleNamespace(submit=lambda mid: True),
        find_vm=find_vm)


def test_the_same_vm_by_name_and_by_id_is_refused(db):
    mgr = make_manager(db, {"web-1": "vm-1", "vm-1": "vm-1"})
    first = mgr.create_migration(CTXT, {"source": "web-1"})
    with pytest.raises(exception.MigrationConflict) as caught:
        mgr.create_migration(CTXT, {"source": "vm-1"})
    assert first["id"] in str(caught.value)
    assert caught.value.code == 409
    assert len(db.list_migrations()) == 1
    # Once the first is final, the VM is free again.
    db.update_migration(first["id"], {"state": "failed"})
    second = mgr.create_migration(CTXT, {"source": "vm-1"})
    assert second["active_source"] == "vm-1"


def test_a_retry_claims_the_vm_again(db):
    mgr = make_manager(db, {"web-1": "vm-1"})
    first = mgr.create_migration(CTXT, {"source": "web-1"})
    db.update_migration(first["id"], {"state": "failed",
                                      "source_vm_id": "vm-1"})
    second = mgr.create_migration(CTXT, {"source": "web-1"})
    with pytest.raises(exception.MigrationConflict, match=second["id"]):
        mgr.retry_migration(CTXT, first["id"])
    assert db.get_migration(first["id"])["state"] == "failed"


def test_an_idempotency_key_returns_the_first_migration(db):
    mgr = make_manager(db, {"web-1": "vm-1"})
    request = {"source": "web-1", "idempotency_key": "k-1"}
    first = mgr.create_migration(CTXT, dict(request))
    again = mgr.create_migration(CTXT, dict(request))
    assert again["id"] == first["id"]
    assert len(db.list_migrations()) == 1
    with pytest.raises(exception.IdempotencyKeyReused, match="mode differ"):
        mgr.create_migration(CTXT, dict(request, mode="warm"))
    # Keys are per project.
    other = context.RequestContext(user_id="bob", project_id="p2")
    db.update_migration(first["id"], {"state": "failed"})
    assert mgr.create_migration(other, dict(request))["id"] != first["id"]


def test_an_unknown_vm_is_still_recorded_and_fails_in_validate(db):
    mgr = make_manager(db, {})
    record = mgr.create_migration(CTXT, {"source": "nope"})
    assert record["active_source"] is None and record["state"] == "queued"


# -- the cutover action and its method -------------------------------------


@pytest.mark.parametrize("req, options", [
    ({"mode": "warm"}, {"cutover": "auto", "cutover_method": "shutdown"}),
    ({"mode": "warm", "cutover": "manual", "cutover_method": "force"},
     {"cutover": "manual", "cutover_method": "force"}),
    ({}, {}),
])
def test_create_records_the_cutover_method(mgr, req, options):
    m = mgr.create_migration(CTXT, dict(req, source="vm"))
    got = {k: v for k, v in m["options"].items()
           if k in ("cutover", "cutover_method")}
    assert got == options


def _cutover_events(mgr, mid):
    return [e["message"] for e in mgr.db.get_migration(mid)["events"]
            if e["step"] == "cutover"]


def test_cutover_action_is_recorded_once_and_cleared_by_retry(mgr):
    m = mgr.create_migration(OPS, {"source": "vm", "mode": "warm",
                                   "cutover": "manual"})
    assert m["options"]["cutover"] == "manual"
    mgr.db.update_migration(m["id"], {"state": "running", "step": "ready"})
    first = mgr.cutover_migration(OPS, m["id"])
    assert first["options"]["cutover_requested"]["by"] == "ops"
    again = mgr.cutover_migration(OPS, m["id"])
    assert again["options"]["cutover_requested"] == \
        first["options"]["cutover_requested"]
    assert [e["message"] for e in again["events"]].count(
        "cutover requested by ops") == 1
    mgr.db.update_migration(m["id"], {"state": "failed"})
    retried = mgr.retry_migration(OPS, m["id"])
    assert "cutover_requested" not in retried["options"]
    assert retried["options"]["cutover"] == "manual"


@pytest.mark.parametrize("request_, values, words", [
    ({"source": "vm"}, {}, "only warm migrations have a cutover"),
    ({"source": "vm", "mode": "warm"}, {"state": "succeeded"},
     "is succeeded at step"),
    ({"source": "vm", "mode": "warm"}, {"state": "running", "step": "swap"},
     "is running at step swap"),
    ({"source": "vm", "mode": "warm"},
     {"state": "running", "step": "cutover"}, "at step cutover"),
])
def test_cutover_action_refused(mgr, request_, values, words):
    m = mgr.create_migration(OPS, request_)
    if values:
        mgr.db.update_migration(m["id"], values)
    with pytest.raises(exception.MigrationStateConflict) as err:
        mgr.cutover_migration(OPS, m["id"])
    assert words in str(err.value)


def test_cutover_action_records_its_method_and_a_change_of_it(mgr):
    mid = held(mgr)
    first = mgr.cutover_migration(CTXT, mid)
    assert "method" not in first["options"]["cutover_requested"]
    forced = mgr.cutover_migration(CTXT, mid, "force")
    requested = forced["options"]["cutover_requested"]
    assert (requested["by"], requested["method"]) == ("alice", "force")
    # The same method again changes nothing; no method keeps it.
    assert mgr.cutover_migration(CTXT, mid, "force")["options"][
        "cutover_requested"] == requested
    assert mgr.cutover_migration(CTXT, mid)["options"][
        "cutover_requested"] == requested
    bob = context.RequestContext(user_id="bob", project_id="p1")
    back = mgr.cutover_migration(bob, mid, "shutdown")
    assert (back["options"]["cutover_requested"]["by"],
            back["options"]["cutover_requested"]["method"]) == (
        "bob", "shutdown")
    # The request's own method is kept apart.
    assert back["options"]["cutover_method"] == "shutdown"
    assert _cutover_events(mgr, mid) == [
        "cutover requested by alice", "cutover (force) requested by alice",
        "cutover (shutdown) requested by bob"]


def test_cutover_action_refuses_an_unknown_method_first(mgr):
    mid = held(mgr)
    with pytest.raises(exception.Invalid, match="cutover method reboot is "
                       "not supported; supported: shutdown, force"):
        mgr.cutover_migration(CTXT, mid, "reboot")
    assert "cutover_requested" not in mgr.db.get_migration(mid)["options"]
    assert _cutover_events(mgr, mid) == []
    # Even before the migration's state is looked at.
    cold = mgr.create_migration(CTXT, {"source": "vm"})
    with pytest.raises(exception.Invalid):
        mgr.cutover_migration(CTXT, cold["id"], "")


def test_cutover_method_cannot_change_once_the_cutover_began(mgr):
    mid = held(mgr, cutover_method="force")
    mgr.db.update_migration(mid, {"step": "cutover"})
    with pytest.raises(exception.MigrationStateConflict,
                       match="at step cutover"):
        mgr.cutover_migration(CTXT, mid, "shutdown")
    assert "cutover_requested" not in mgr.db.get_migration(mid)["options"]


# The warm flow's steps, spelled out: the wire values the API shows.
BEFORE_CUTOVER = ("validate", "image", "ports", "boot", "mirror", "ready")


FROM_CUTOVER = ("cutover", "finish", "swap", "start", "stop_source",
                "cleanup", "retire_source", "done")


@pytest.mark.parametrize("step", BEFORE_CUTOVER + FROM_CUTOVER)
def test_a_cutover_is_taken_until_the_cutover_step(mgr, step):
    mid = held(mgr)
    mgr.db.update_migration(mid, {"step": step})
    if step in BEFORE_CUTOVER:
        assert mgr.cutover_migration(CTXT, mid)["options"][
            "cutover_requested"]["by"] == "alice"
        return
    with pytest.raises(exception.MigrationStateConflict,
                       match="running at step %s: cannot cut over" % step):
        mgr.cutover_migration(CTXT, mid)


def test_retry_forgets_the_actions_method_not_the_requests(mgr):
    mid = held(mgr, cutover_method="force")
    mgr.cutover_migration(CTXT, mid, "shutdown")
    mgr.db.update_migration(mid, {"state": "failed"})
    options = mgr.retry_migration(CTXT, mid)["options"]
    assert "cutover_requested" not in options
    assert options["cutover_method"] == "force"


# -- dry runs: a report, and nothing recorded ---------------------------------


def test_a_dry_run_answers_the_preflight_and_records_nothing(db):
    asked = []

    def preflight(req):
        asked.append(req)
        return {"ok": True, "findings": [], "plan": {}, "summary": "0"}

    started = []
    mgr = manager.ConductorManager(
        db, engine=types.SimpleNamespace(submit=started.append),
        preflight=preflight)
    answer = mgr.create_migration(CTXT, {"source": "web-1", "dry_run": True,
                                         "idempotency_key": "k-1"})
    assert answer == {"dry_run": True, "preflight": {
        "ok": True, "findings": [], "plan": {}, "summary": "0"}}
    assert asked[0]["source"] == "web-1" and asked[0]["mode"] == "cold"
    assert db.list_migrations() == [] and started == []
    # A bad request is refused as without dry_run, before any preflight.
    with pytest.raises(exception.Invalid, match="mode hot"):
        mgr.create_migration(CTXT, {"source": "web-1", "dry_run": True,
                                    "mode": "hot"})
    assert len(asked) == 1


def test_a_conductor_without_preflight_refuses_a_dry_run(db):
    mgr = manager.ConductorManager(db, engine=None)
    with pytest.raises(exception.Invalid, match="cannot run a preflight"):
        mgr.create_migration(CTXT, {"source": "web-1", "dry_run": True})
    assert db.list_migrations() == []
