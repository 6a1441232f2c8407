"""The engine on a real SQLite database, with fake steps: it runs queued
migrations, adopts those whose claim expired, and fences a flow whose
claim it could not renew."""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.db import api
from tests.unit.conductor.flow.script import CONF
from tests.unit.conductor.flow.script import LONG_AGO
from tests.unit.conductor.flow.script import Clients
from tests.unit.conductor.flow.script import Script
from tests.unit.conductor.flow.script import claim
from tests.unit.conductor.flow.script import new_migration
from tests.unit.conductor.flow.script import new_queued_migration


def test_engine_runs_queued_and_adopts_expired_claims(db, monkeypatch):
    Script(monkeypatch)
    new_queued_migration(db, "mine")
    # Claimed by a conductor whose lease ran out long ago.
    new_queued_migration(db, "orphan", state="running", step="sync",
                         conductor="dead", lease_until=api.models.utcnow()
                         .replace(year=2000))
    new_queued_migration(db, "busy", state="running", conductor="alive",
                         lease_until=api.models.utcnow().replace(
                             year=2999))
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
