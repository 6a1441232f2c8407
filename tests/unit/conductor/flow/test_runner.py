"""The runner on a real SQLite database, with fake steps.

The steps themselves talk to CloudStack, Glance, Nova and agents; they are
exercised in their own tests here and for real in the end-to-end tests.
Here the sequencing is under test: checkpoints, resume, rollback, cancel,
shutdown, and the state machine's promise: a conductor taken over acts no
more, rollbacks finish as rollbacks, nothing rolls back after the commit
point.  The same promise on real processes: tests/e2e/test_safety.py and
tests/faults/.
"""

import datetime
import types

import pytest

from cs2os_agent.cloudstack import errors as cloudstack_errors
from cs2os_agent.common import states
from cs2os_agent.conductor import manager
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import runner
from cs2os_agent.conductor.flow import warm
from tests.unit.conductor.flow.script import CONF
from tests.unit.conductor.flow.script import LONG_AGO
from tests.unit.conductor.flow.script import NOW
from tests.unit.conductor.flow.script import Script
from tests.unit.conductor.flow.script import claim
from tests.unit.conductor.flow.script import context
from tests.unit.conductor.flow.script import new_migration
from tests.unit.conductor.flow.script import new_queued_migration
from tests.unit.conductor.helpers import CTXT


class Notifier:
    def __init__(self):
        self.sent = []

    def emit(self, context, what, migration):
        self.sent.append((what, migration["state"]))


class ConductorDied(BaseException):
    """What a SIGKILL looks like to the code after it: nothing runs."""


def test_the_flows_run_the_steps_states_names_in_order():
    # The API, the CLI and the manager read the names from states.py.
    assert tuple(n for n, _ in cold.STEPS) == states.COLD_STEPS
    assert tuple(n for n, _ in warm.STEPS) == states.WARM_STEPS
    assert set(states.AFTER_CUTOVER) - {states.DONE} <= set(
        states.WARM_STEPS)


def test_success_runs_every_step_once_and_notifies(db, monkeypatch):
    script = Script(monkeypatch)
    new_queued_migration(db)
    notifier = Notifier()
    runner.run(context(db, notifier=notifier))
    done = db.get_migration("m1")
    assert script.ran == script.names
    assert (done["state"], done["step"]) == ("succeeded", "done")
    assert done["finished_at"] and done["started_at"]
    assert [e["step"] for e in done["events"]] == script.names
    assert notifier.sent == [("start", "running"), ("end", "succeeded")]


def test_failure_rolls_back_what_was_done_in_reverse(db, monkeypatch):
    script = Script(monkeypatch, fail_at="sync")
    new_queued_migration(db)
    notifier = Notifier()
    runner.run(context(db, notifier=notifier))
    failed = db.get_migration("m1")
    assert failed["state"] == "failed"
    assert failed["step"] == "sync"
    assert "sync failed: RuntimeError: sync broke" in failed["error"]
    # swap never ran: only boot and the source stop are undone.
    assert script.undone == ["boot", "stop_source"]
    assert failed["result"]["rolled_back"] == ["undid boot",
                                               "undid stop_source"]
    kinds = [(e["step"], e["kind"]) for e in failed["events"]]
    assert ("sync", "error") in kinds and ("rollback", "rollback") in kinds
    assert notifier.sent[-1] == ("error", "failed")


def test_resume_starts_at_the_recorded_step(db, monkeypatch):
    script = Script(monkeypatch)
    new_queued_migration(db, state="running", step="swap",
                         resources={"boot": True})
    runner.run(context(db))
    assert script.ran == ["swap", "start", "cleanup", "retire_source"]
    assert db.get_migration("m1")["state"] == "succeeded"


def test_cancel_between_steps_rolls_back(db, monkeypatch):
    def cancel_after_boot(name, ctx):
        if name == "boot":
            db.update_migration("m1", {"state": "cancelling"})

    script = Script(monkeypatch, hook=cancel_after_boot)
    new_queued_migration(db)
    runner.run(context(db))
    cancelled = db.get_migration("m1")
    assert cancelled["state"] == "cancelled"
    assert script.ran == ["validate", "image", "ports", "boot"]
    assert script.undone == ["boot"]
    assert "cancelled by request during volumes" in cancelled["error"]


def test_shutdown_pauses_without_rollback(db, monkeypatch):
    def stop_after_image(name, ctx):
        if name == "image":
            ctx.request_stop()

    script = Script(monkeypatch, hook=stop_after_image)
    new_queued_migration(db)
    runner.run(context(db))
    paused = db.get_migration("m1")
    assert (paused["state"], paused["step"]) == ("running", "image")
    assert script.undone == []


def test_a_cancel_of_a_queued_migration_wins_over_its_start(
        db, monkeypatch):
    # The engine claimed it, then the cancel flipped it to cancelled
    # before the run began: the run does nothing at all.
    script = Script(monkeypatch)
    new_migration(db, state="queued")
    ctx = claim(db, "c1")
    mgr = manager.ConductorManager(db, engine=None)
    assert mgr.cancel_migration(CTXT, "m1")["state"] == "cancelled"
    runner.run(ctx)
    assert script.ran == []
    assert db.get_migration("m1")["state"] == "cancelled"


# -- one actor: a conductor taken over stops -------------------------------


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

    script = Script(monkeypatch, hook=taken_over)
    new_migration(db, state="queued")
    runner.run(claim(db, "c1"))
    assert script.ran == ["validate", "image"]
    assert script.undone == []
    record = db.get_migration("m1")
    assert (record["state"], record["step"]) == ("running", "image")
    assert "image" not in record["resources"]  # its write was refused
    assert [e["step"] for e in record["events"]] == ["validate"]


# -- rollbacks finish as rollbacks -----------------------------------------


def test_an_interrupted_rollback_is_finished_never_resumed_forward(
        db, monkeypatch):
    def die_in_undo_boot(name, ctx):
        if name == "boot":
            raise ConductorDied()

    script = Script(monkeypatch, fail_at="sync", undo_hook=die_in_undo_boot)
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


def test_a_failing_undo_step_keeps_the_rollback_going(db, monkeypatch):
    # CloudStack answers the start of the VM with a 503 once: the pass
    # ends with the record still rolling back, and the next pass (the
    # engine's next renewal) starts the VM; nothing is undone twice.
    busy = [True]

    def cloudstack_busy(name, ctx):
        if name == "stop_source" and busy and busy.pop():
            raise cloudstack_errors.CloudStackAPIError(
                command="startVirtualMachine", errorcode=503, errortext="busy")

    script = Script(monkeypatch, fail_at="sync", undo_hook=cloudstack_busy)
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

    Script(monkeypatch, fail_at="sync", undo_hook=cloudstack_down)
    new_migration(db, state="queued")
    for _ in range(CONF.conductor.rollback_attempts):
        runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert record["state"] == "failed"
    (left,) = record["result"]["rollback_incomplete"]
    assert left.startswith("undo_stop_source: ")
    assert "startVirtualMachine" in left
    assert "rollback is incomplete after 3 passes" in record["error"]


# -- the commit point ------------------------------------------------------


def test_a_failure_after_the_commit_never_rolls_back(db, monkeypatch):
    script = Script(monkeypatch, fail_at="start")
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
    script = Script(monkeypatch, fail_at="retire_source")
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

    script = Script(monkeypatch, hook=cancel_in_swap)
    new_migration(db, state="queued")
    runner.run(claim(db, "c1"))
    record = db.get_migration("m1")
    assert record["state"] == "cancelled"
    assert record["committed"] is False
    assert "start" not in script.ran
    assert script.undone == ["swap", "boot", "stop_source"]
