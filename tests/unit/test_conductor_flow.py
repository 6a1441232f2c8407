"""The runner and engine on a real SQLite database, with fake steps.

The steps themselves talk to CloudStack, Glance, Nova and agents; they are
exercised for real in the end-to-end tests.  Here the sequencing is under
test: checkpoints, resume, rollback, cancel, shutdown, claims.
"""

import types

import pytest

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import disk
from cs2os_agent.conductor.flow import resources
from cs2os_agent.conductor.flow import runner
from cs2os_agent.conductor.flow import warm
from cs2os_agent.db import api


class Clients:
    admin_context = None


CONF = types.SimpleNamespace(conductor=types.SimpleNamespace(
    lease_seconds=60, agent_restart_timeout=30, rollback_attempts=3))


class Notifier:
    def __init__(self):
        self.sent = []

    def emit(self, context, what, migration):
        self.sent.append((what, migration["state"]))


def new_migration(db, mid="m1", **values):
    row = {"id": mid, "source_ref": "vm", "state": "queued",
           "step": "validate", "options": {}, "source": {},
           "resources": {}, "result": {}}
    row.update(values)
    return db.create_migration(row)


class Script:
    """Fake COLD and ROLLBACK lists that record what ran."""

    def __init__(self, monkeypatch, fail_at=None, hook=None):
        self.ran = []
        self.undone = []
        self.fail_at = fail_at
        self.hook = hook

        def make(name):
            def step(ctx):
                self.ran.append(name)
                if self.hook:
                    self.hook(name, ctx)
                ctx.resource(**{name: True})
                if name == self.fail_at:
                    raise RuntimeError("%s broke" % name)
            return step

        def make_undo(name):
            def undo(ctx):
                if ctx.resources.get(name):
                    self.undone.append(name)
                    return "undid %s" % name
                return None
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
        self.names = names


def context(db, mid="m1", notifier=None):
    return flow_context.FlowContext(db.get_migration(mid), db, CONF,
                                    Clients(), notifier)


def test_the_flows_run_the_steps_states_names_in_order():
    # The API, the CLI and the manager read the names from states.py.
    assert tuple(n for n, _ in cold.STEPS) == states.COLD_STEPS
    assert tuple(n for n, _ in warm.STEPS) == states.WARM_STEPS
    assert set(states.AFTER_CUTOVER) - {states.DONE} <= set(
        states.WARM_STEPS)


def test_an_undeclared_resource_key_is_refused_before_it_is_written(db):
    new_migration(db)
    ctx = context(db)
    with pytest.raises(KeyError) as err:
        ctx.resource(server_id="s-1", sever_id="typo")
    assert "sever_id" in str(err.value)
    assert "conductor/flow/resources.py" in str(err.value)
    assert db.get_migration("m1")["resources"] == {}
    with pytest.raises(KeyError):
        ctx.resources.get("sever_id")
    ctx.resource(server_id="s-1")
    assert db.get_migration("m1")["resources"] == {"server_id": "s-1"}
    assert ctx.resources["server_id"] == "s-1"


def test_success_runs_every_step_once_and_notifies(db, monkeypatch):
    script = Script(monkeypatch)
    new_migration(db)
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
    new_migration(db)
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
    new_migration(db, state="running", step="swap",
                  resources={"boot": True})
    runner.run(context(db))
    assert script.ran == ["swap", "start", "cleanup", "retire_source"]
    assert db.get_migration("m1")["state"] == "succeeded"


def test_cancel_between_steps_rolls_back(db, monkeypatch):
    def cancel_after_boot(name, ctx):
        if name == "boot":
            db.update_migration("m1", {"state": "cancelling"})

    script = Script(monkeypatch, hook=cancel_after_boot)
    new_migration(db)
    runner.run(context(db))
    cancelled = db.get_migration("m1")
    assert cancelled["state"] == "cancelled"
    assert script.ran == ["validate", "image", "ports", "boot"]
    assert script.undone == ["boot"]
    assert "cancelled by request during stop_source" in cancelled["error"]


def test_shutdown_pauses_without_rollback(db, monkeypatch):
    def stop_after_image(name, ctx):
        if name == "image":
            ctx.request_stop()

    script = Script(monkeypatch, hook=stop_after_image)
    new_migration(db)
    runner.run(context(db))
    paused = db.get_migration("m1")
    assert (paused["state"], paused["step"]) == ("running", "image")
    assert script.undone == []


def test_agent_busy_with_the_same_migration_is_waited_for(db, monkeypatch):
    calls = []

    class Agent:
        def sync_overlay(self, *args):
            calls.append(args)
            if len(calls) == 1:
                raise exception.MigrationBusy(
                    instance_uuid="i", owner="m1", migration_id="m1")
            return {"bytes_copied": 7}

    clients = Clients()
    clients.agent = Agent()
    new_migration(db, resources={"host": "h", "server_id": "s",
                                 "overlay_source": {}})
    ctx = flow_context.FlowContext(db.get_migration("m1"), db, CONF,
                                   clients)
    monkeypatch.setattr(disk, "SYNC_BUSY_POLL", 0)
    disk.sync(ctx)
    assert len(calls) == 2
    assert db.get_migration("m1")["result"]["sync"] == {"bytes_copied": 7}


def test_engine_runs_queued_and_adopts_expired_claims(db, monkeypatch):
    Script(monkeypatch)
    new_migration(db, "mine")
    # Claimed by a conductor whose lease ran out long ago.
    new_migration(db, "orphan", state="running", step="sync",
                  conductor="dead", lease_until=api.models.utcnow()
                  .replace(year=2000))
    new_migration(db, "busy", state="running", conductor="alive",
                  lease_until=api.models.utcnow().replace(year=2999))
    def make_context(m, owner):
        return flow_context.FlowContext(m, db, CONF, Clients(), owner=owner)

    eng = conductor_engine.Engine(db, "c1", 2, 60, make_context)
    eng.adopt()
    eng._pool.shutdown(wait=True)
    assert db.get_migration("mine")["state"] == "succeeded"
    orphan = db.get_migration("orphan")
    assert (orphan["state"], orphan["conductor"]) == ("succeeded", "c1")
    assert db.get_migration("busy")["conductor"] == "alive"
    assert db.get_migration("busy")["state"] == "running"
