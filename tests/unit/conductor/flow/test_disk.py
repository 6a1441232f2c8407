"""The agent's work on the disk: sync, swap, cleanup and undo_swap.

The agent calls' repeats after an agent restart are agentcall.py's
(test_agentcall.py); here: a sync the agent is still busy with.
"""

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import agentcall
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import disk
from tests.unit.conductor.flow.script import CONF
from tests.unit.conductor.flow.script import Clients
from tests.unit.conductor.flow.script import new_queued_migration


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
    new_queued_migration(db, resources={"host": "h", "server_id": "s",
                                        "overlay_source": {}})
    ctx = flow_context.FlowContext(db.get_migration("m1"), db, CONF,
                                   clients)
    monkeypatch.setattr(agentcall, "BUSY_POLL", 0)
    disk.sync(ctx)
    assert len(calls) == 2
    assert db.get_migration("m1")["result"]["sync"] == {"bytes_copied": 7}


def test_sync_asks_to_keep_snapshots_and_records_what_the_agent_did(db):
    calls = []
    found = {"count": 2, "kept": True, "bytes_not_copied": 0}

    class Agent:
        def sync_overlay(self, *args):
            calls.append(args)
            return {"bytes_copied": 7, "internal_snapshots": found}

    clients = Clients()
    clients.agent = Agent()
    new_queued_migration(
        db, options={"keep_snapshots": True},
        resources={"host": "h", "server_id": "s", "overlay_source": {}},
        result={"internal_snapshots": {"count": 2, "kept": True}})
    ctx = flow_context.FlowContext(db.get_migration("m1"), db, CONF,
                                   clients)
    disk.sync(ctx)
    # (context, host, migration, server, source, layers, keep_snapshots)
    assert calls[0][2:] == ("m1", "s", {}, None, True, "qcow2")
    assert db.get_migration("m1")["result"]["internal_snapshots"] == found
