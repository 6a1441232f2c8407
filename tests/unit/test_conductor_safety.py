"""The state machine's promise on a real SQLite database, fake steps.

One actor per migration (lease epochs), rollbacks that finish as
rollbacks, a commit point after which nothing rolls back, one active
migration per CloudStack VM, idempotent creates, compare-and-set cancels.
The same promise on real processes: tests/functional/test_conductor_faults.py
and tests/e2e/test_safety.py.
"""

import datetime
import types

import oslo_messaging as messaging
import pytest

from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import manager
from cs2os_agent.conductor.flow import agentcall
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import disk
from cs2os_agent.conductor.flow import resources
from cs2os_agent.conductor.flow import runner
from cs2os_agent.db import models

CONF = types.SimpleNamespace(conductor=types.SimpleNamespace(
    lease_seconds=60, rollback_attempts=3))
NOW = models.utcnow()
LONG_AGO = NOW - datetime.timedelta(hours=1)
CTXT = cs2os_context.RequestContext(user_id="alice", project_id="p1")


class Clients:
    admin_context = None


class ConductorDied(BaseException):
    """What a SIGKILL looks like to the code after it: nothing runs."""


def new_migration(db, mid="m1", **values):
    row = {"id": mid, "source_ref": "vm", "state": "running",
           "step": "validate", "options": {}, "source": {},
           "resources": {}, "result": {}, "source_vm_id": "vm-1",
           "source_vm_name": "web-1"}
    row.update(values)
    return db.create_migration(row)


def claim(db, conductor, mid="m1", now=NOW):
    epoch = db.claim(mid, conductor, now, now + datetime.timedelta(
        seconds=60))
    assert epoch is not None
    return flow_context.FlowContext(db.get_migration(mid), db, CONF,
                                    Clients(), owner=(conductor, epoch))


class Steps:
    """Fake COLD/ROLLBACK that record what ran; undo steps record their
    undo (as the real ones do), so a rollback run twice undoes once."""

    def __init__(self, monkeypatch, fail_at=None, hook=None,
                 undo_hook=None):
        self.ran, self.undone = [], []
        self.fail_at, self.hook, self.undo_hook = fail_at, hook, undo_hook

        def make(name):
            def step(ctx):
                self.ran.append(name)
                if self.hook:
                    self.hook(name, ctx)
                ctx.resource(**{name: True})
                if name == "start":
                    ctx.commit()
                if name == self.fail_at:
                    raise RuntimeError("%s broke" % name)
            return step

        def make_undo(name):
            def undo(ctx):
                if not ctx.resources.get(name) or ctx.committed:
                    return None
                if self.undo_hook:
                    self.undo_hook(name, ctx)
                self.undone.append(name)
                ctx.resource(**{name: False})
                return "undid %s" % name
            return undo

        names = [n for n, _ in cold.STEPS]
        monkeypatch.setattr(cold, "STEPS", [(n, make(n)) for n in names])
        # The fake steps record a resource named after each step.
        monkeypatch.setattr(resources, "KEYS", dict(
            resources.KEYS, **{n: ("test", n) for n in names}))
        monkeypatch.setattr(cold, "ROLLBACK", [
            ("undo_swap", make_undo("swap")),
            ("undo_boot", make_undo("boot")),
            ("undo_stop_source", make_undo("stop_source")),
        ])


# -- one actor: lease epochs -------------------------------------------------


def test_each_claim_raises_the_epoch_and_fences_the_one_before(db):
    new_migration(db, conductor="c1", lease_until=LONG_AGO)
    stale = claim(db, "c1")
    assert stale.owner == ("c1", 1)
    # c1's lease lapsed (paused past it); c2 takes over.
    db.update_migration("m1", {"lease_until": LONG_AGO})
    fresh = claim(db, "c2")
    assert fresh.owner == ("c2", 2)
    with pytest.raises(exception.LeaseLost, match="c1 no longer holds"):
        stale.save(step="boot")
    with pytest.raises(exception.LeaseLost):
        stale.guard()
    with pytest.raises(exception.LeaseLost):
        stale.event("boot", "done")
    assert not db.renew("m1", "c1", 1, NOW)
    record = db.get_migration("m1")
    assert (record["conductor"], record["lease_epoch"]) == ("c2", 2)
    assert record["step"] == "validate" and record["events"] == []
    fresh.save(step="boot")
    assert db.get_migration("m1")["step"] == "boot"


def test_a_lapsed_lease_nobody_took_is_still_ours(db):
    new_migration(db)
    ctx = claim(db, "c1")
    db.update_migration("m1", {"lease_until": LONG_AGO})
    ctx.guard()  # extends it at the same epoch: nobody can claim it now
    assert db.claim("m1", "c2", NOW, NOW) is None
    assert db.get_migration("m1")["lease_until"] > NOW.isoformat()


def test_a_conductor_taken_over_mid_step_stops_without_acting(
        db, monkeypatch):
    # The paused conductor's case: while it sat in "image", another took
    # the migration over.  Woken, it must not run one more step, roll
    # back, or finish the record.
    def taken_over(name, ctx):
        if name == "image":
            db.update_migration("m1", {"lease_until": LONG_AGO})
            assert db.claim("m1", "c2", NOW, NOW + datetime.timedelta(
                seconds=60)) == 2

    script = Steps(monkeypatch, hook=taken_over)
    new_migration(db, state="queued")
    runner.run(claim(db, "c1"))
    assert script.ran == ["validate", "image"]
    assert script.undone == []
    record = db.get_migration("m1")
    assert (record["state"], record["step"]) == ("running", "image")
    assert "image" not in record["resources"]  # its write was refused
    assert [e["step"] for e in record["events"]] == ["validate"]


def test_the_engine_fences_a_flow_whose_claim_it_cannot_renew(db):
    new_migration(db)
    eng = conductor_engine.Engine(db, "c1", 1, 60, None)
    ctx = claim(db, "c1")
    eng._epochs["m1"] = ctx.owner[1]
    eng._running["m1"] = ctx
    eng._renew()
    ctx.save(step="image")  # still ours
    db.update_migration("m1", {"lease_until": LONG_AGO})
    claim(db, "c2")
    eng._renew()
    with pytest.raises(exception.LeaseLost):
        ctx.save(step="boot")
    assert db.get_migration("m1")["step"] == "image"


# -- rollbacks finish as rollbacks --------------------------------------------


def test_an_interrupted_rollback_is_finished_never_resumed_forward(
        db, monkeypatch):
    def die_in_undo_boot(name, ctx):
        if name == "boot":
            raise ConductorDied()

    script = Steps(monkeypatch, fail_at="sync", undo_hook=die_in_undo_boot)
    new_migration(db, state="queued")
    with pytest.raises(ConductorDied):
        runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert (record["state"], record["step"]) == (states.ROLLING_BACK, "sync")
    assert record["result"]["rollback_of"]["state"] == "failed"
    assert script.ran[-1] == "sync"

    # The next conductor takes over: it rolls back, it never syncs again.
    script.undo_hook = None
    db.update_migration("m1", {"lease_until": LONG_AGO})
    ran_before = list(script.ran)
    runner.run(claim(db, "c2"))
    record = db.get_migration("m1")
    assert record["state"] == "failed"
    assert "sync failed: RuntimeError: sync broke" in record["error"]
    assert script.ran == ran_before
    assert script.undone == ["boot", "stop_source"]
    assert record["result"]["rolled_back"] == ["undid boot",
                                               "undid stop_source"]
    assert record["active_source"] is None


def test_a_rollback_cannot_be_cancelled(db):
    new_migration(db, state=states.ROLLING_BACK)
    mgr = manager.ConductorManager(db, engine=None)
    with pytest.raises(exception.MigrationStateConflict,
                       match="rolling_back: cannot cancel"):
        mgr.cancel_migration(CTXT, "m1")


# -- the commit point -----------------------------------------------------


def test_a_failure_after_the_commit_never_rolls_back(db, monkeypatch):
    script = Steps(monkeypatch, fail_at="start")
    new_migration(db, state="queued")
    runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert (record["state"], record["step"]) == ("failed", "start")
    assert record["committed"] is True
    assert script.undone == []
    assert "will not start the CloudStack VM again" in record["error"]
    # Retry resumes the forward flow at the failed step.
    mgr = manager.ConductorManager(db, engine=types.SimpleNamespace(
        submit=lambda mid: True))
    queued = mgr.retry_migration(CTXT, "m1")
    assert (queued["state"], queued["step"]) == ("queued", "start")
    script.fail_at = None
    runner.run(claim(db, "c1"))
    assert script.ran[-3:] == ["start", "cleanup", "retire_source"]
    assert script.ran.count("boot") == 1
    assert db.get_migration("m1")["state"] == "succeeded"


def test_a_tidy_step_failing_after_the_commit_is_a_warning(
        db, monkeypatch):
    script = Steps(monkeypatch, fail_at="retire_source")
    new_migration(db, state="queued")
    runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert (record["state"], record["step"]) == ("succeeded", "done")
    (warning,) = record["result"]["warnings"]
    assert warning["step"] == "retire_source"
    assert "retire_source broke" in warning["message"]
    assert script.undone == []
    assert [e["kind"] for e in record["events"]].count("warning") == 1


def test_a_cancel_recorded_before_the_commit_wins(db, monkeypatch):
    def cancel_in_swap(name, ctx):
        if name == "swap":
            db.update_migration("m1", {"state": states.CANCELLING})

    script = Steps(monkeypatch, hook=cancel_in_swap)
    new_migration(db, state="queued")
    runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert record["state"] == "cancelled"
    assert record["committed"] is False
    assert "start" not in script.ran
    assert script.undone == ["swap", "boot", "stop_source"]


def test_the_commit_itself_refuses_a_cancelled_record(db):
    new_migration(db, state=states.CANCELLING)
    ctx = claim(db, "c1")
    ctx.migration["state"] = states.RUNNING  # read before the cancel
    with pytest.raises(exception.MigrationCancelled):
        ctx.commit()
    assert db.get_migration("m1")["committed"] is False


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


# -- one migration per VM; idempotent creates -----------------------------


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


def test_validate_claims_the_vm_when_the_request_could_not(db):
    # CloudStack did not answer at request time: the record is made, and
    # the flow's validate claims the VM (the unique index decides).
    new_migration(db, "holder", active_source="vm-1")
    new_migration(db, "late")
    ctx = claim(db, "c1", mid="late")
    with pytest.raises(exception.MigrationConflict, match="holder"):
        ctx.save(source_vm_id="vm-1", active_source="vm-1")


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
    other = cs2os_context.RequestContext(user_id="bob", project_id="p2")
    db.update_migration(first["id"], {"state": "failed"})
    assert mgr.create_migration(other, dict(request))["id"] != first["id"]


def test_an_unknown_vm_is_still_recorded_and_fails_in_validate(db):
    mgr = make_manager(db, {})
    record = mgr.create_migration(CTXT, {"source": "nope"})
    assert record["active_source"] is None and record["state"] == "queued"


# -- what counts as a start Nova refused ----------------------------------


class _Compute:
    def __init__(self, error):
        self.error = error

    def get_server(self, server_id):
        return types.SimpleNamespace(id=server_id, status="SHUTOFF")

    def start_server(self, server_id):
        raise self.error


@pytest.mark.parametrize("status, refused", [
    (401, True), (403, True), (404, True), (409, False), (500, False),
    (503, False)])
def test_only_a_start_refused_outright_counts_as_not_started(status,
                                                             refused):
    from openstack import exceptions as sdk_exc

    from cs2os_agent.openstack import client as os_client

    error = sdk_exc.HttpException(message="nova says %d" % status,
                                  http_status=status)
    nova = os_client.OpenStackClient(types.SimpleNamespace(
        compute=_Compute(error)))
    with pytest.raises(exception.OpenStackError) as caught:
        nova.request_start("srv-1")
    assert isinstance(caught.value, exception.StartRefused) is refused
    assert "start server srv-1" in str(caught.value)
    assert "nova says %d" % status in str(caught.value)


def test_a_cancel_of_a_queued_migration_wins_over_its_start(
        db, monkeypatch):
    # The engine claimed it, then the cancel flipped it to cancelled
    # before the run began: the run does nothing at all.
    script = Steps(monkeypatch)
    new_migration(db, state="queued")
    ctx = claim(db, "c1")
    mgr = manager.ConductorManager(db, engine=None)
    assert mgr.cancel_migration(CTXT, "m1")["state"] == "cancelled"
    runner.run(ctx)
    assert script.ran == []
    assert db.get_migration("m1")["state"] == "cancelled"


# -- an agent restart in the middle of a call ----------------------------


class RestartingAgent:
    """An agent whose first ``sync_overlay`` dies with it: the call times
    out, the agent answers no ping for a while, then answers both."""

    def __init__(self, down_pings=2):
        self.calls, self.pings, self.down_pings = [], 0, down_pings

    def sync_overlay(self, context, host, *args):
        self.calls.append((host,) + args)
        if len(self.calls) == 1:
            raise messaging.MessagingTimeout("no reply")
        return {"bytes_copied": 7}

    def get_agent_info(self, context, host, timeout=None):
        self.pings += 1
        if self.pings <= self.down_pings:
            raise messaging.MessagingTimeout("agent down")
        return {"host": host}


def agent_ctx(db, monkeypatch, agent, restart_timeout=30):
    monkeypatch.setattr(agentcall, "POLL", 0)
    new_migration(db, resources={"host": "cmp-1", "server_id": "s",
                                 "overlay_source": {}})
    conf = types.SimpleNamespace(conductor=types.SimpleNamespace(
        lease_seconds=60, agent_restart_timeout=restart_timeout))
    clients = Clients()
    clients.agent = agent
    ctx = claim(db, "c1")
    ctx.conf, ctx.clients = conf, clients
    return ctx


def test_a_call_the_dead_agent_lost_is_repeated_once_it_answers(
        db, monkeypatch):
    agent = RestartingAgent()
    ctx = agent_ctx(db, monkeypatch, agent)
    disk.sync(ctx)
    assert agent.calls == [("cmp-1", "m1", "s", {})] * 2
    assert agent.pings == 3
    record = db.get_migration("m1")
    assert record["result"]["sync"] == {"bytes_copied": 7}
    (warning,) = [e for e in record["events"] if e["kind"] == "warning"]
    assert "did not answer sync_overlay" in warning["message"]


def test_an_agent_that_stays_down_fails_the_step(db, monkeypatch):
    agent = RestartingAgent(down_pings=10 ** 6)
    ctx = agent_ctx(db, monkeypatch, agent, restart_timeout=0)
    with pytest.raises(messaging.MessagingTimeout):
        disk.sync(ctx)
    assert len(agent.calls) == 1


# -- a rollback that meets a busy dependency ---------------------------------


def test_a_failing_undo_step_keeps_the_rollback_going(db, monkeypatch):
    # CloudStack answers the start of the VM with a 503 once: the pass
    # ends with the record still rolling back, and the next pass (the
    # engine's next renewal) starts the VM; nothing is undone twice.
    busy = [True]

    def cloudstack_busy(name, ctx):
        if name == "stop_source" and busy and busy.pop():
            raise cloudstack_errors.CloudStackAPIError(
                command="startVirtualMachine", errorcode=503, errortext="busy")

    script = Steps(monkeypatch, fail_at="sync", undo_hook=cloudstack_busy)
    new_migration(db, state="queued")
    runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert record["state"] == states.ROLLING_BACK
    assert record["result"]["rollback_attempts"] == 1
    assert script.undone == ["boot"]
    runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert record["state"] == "failed"
    assert script.undone == ["boot", "stop_source"]
    assert record["result"]["rolled_back"] == ["undid boot",
                                               "undid stop_source"]
    assert "rollback_incomplete" not in record["result"]
    assert record["error"] == "sync failed: RuntimeError: sync broke"


def test_a_rollback_that_cannot_finish_says_what_is_left(db, monkeypatch):
    def cloudstack_down(name, ctx):
        if name == "stop_source":
            raise cloudstack_errors.CloudStackAPIError(
                command="startVirtualMachine", errorcode=503, errortext="down")

    Steps(monkeypatch, fail_at="sync", undo_hook=cloudstack_down)
    new_migration(db, state="queued")
    for _ in range(CONF.conductor.rollback_attempts):
        runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert record["state"] == "failed"
    (left,) = record["result"]["rollback_incomplete"]
    assert left.startswith("undo_stop_source: ")
    assert "startVirtualMachine" in left
    assert "rollback is incomplete after 3 passes" in record["error"]
