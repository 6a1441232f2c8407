"""An agent restart in the middle of a call: the call is repeated once the
agent answers again, within [conductor] agent_restart_timeout."""

import types

import oslo_messaging as messaging
import pytest

from cs2os_agent.conductor.flow import agentcall
from cs2os_agent.conductor.flow import disk
from tests.unit.conductor.flow.script import Clients
from tests.unit.conductor.flow.script import claim
from tests.unit.conductor.flow.script import new_migration


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
    # No layers between the overlay and its template: None.
    assert agent.calls == [("cmp-1", "m1", "s", {}, None, False, "qcow2")] * 2
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
