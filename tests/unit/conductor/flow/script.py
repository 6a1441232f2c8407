"""The runner's tests' scaffolding: records, contexts and a fake cold flow.

Plain names, imported by the runner, context, disk, agentcall, engine and
manager tests: a migration record on the real SQLite database (``db``,
tests/unit/conftest.py), a FlowContext on it (unfenced, or as a claim's
owner), and ``Script``, fake cold STEPS and ROLLBACK that record what ran.
"""

import datetime
import types

from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import resources
from cs2os_agent.db import models

CONF = types.SimpleNamespace(conductor=types.SimpleNamespace(
    lease_seconds=60, agent_restart_timeout=30, rollback_attempts=3))
NOW = models.utcnow()
LONG_AGO = NOW - datetime.timedelta(hours=1)


class Clients:
    admin_context = None


def new_queued_migration(db, mid="m1", **values):
    """A queued migration, at its first step."""
    row = {"id": mid, "source_ref": "vm", "state": "queued",
           "step": "validate", "options": {}, "source": {},
           "resources": {}, "result": {}}
    row.update(values)
    return db.create_migration(row)


def new_migration(db, mid="m1", **values):
    """A running migration of CloudStack VM vm-1 (web-1)."""
    return new_queued_migration(
        db, mid, **dict({"state": "running", "source_vm_id": "vm-1",
                         "source_vm_name": "web-1"}, **values))


def context(db, mid="m1", notifier=None):
    """A context without a claim: it writes without fencing."""
    return flow_context.FlowContext(db.get_migration(mid), db, CONF,
                                    Clients(), notifier)


def claim(db, conductor, mid="m1", now=NOW):
    """``conductor`` claims the migration: a context fenced by its epoch."""
    epoch = db.claim(mid, conductor, now, now + datetime.timedelta(
        seconds=60))
    assert epoch is not None
    return flow_context.FlowContext(db.get_migration(mid), db, CONF,
                                    Clients(), owner=(conductor, epoch))


class Script:
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
        self.names = names
