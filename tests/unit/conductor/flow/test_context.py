"""FlowContext on a real SQLite database: fencing, the record, the commit.

One actor per migration: each claim raises the lease epoch and every write
names it, so a conductor whose claim was taken over writes nothing more.
The resources record takes only the keys conductor/flow/resources.py
declares.  The commit is a compare-and-set against a cancel.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.common import states
from tests.unit.conductor.flow.script import LONG_AGO
from tests.unit.conductor.flow.script import NOW
from tests.unit.conductor.flow.script import claim
from tests.unit.conductor.flow.script import context
from tests.unit.conductor.flow.script import new_migration
from tests.unit.conductor.flow.script import new_queued_migration

# -- one actor: lease epochs -----------------------------------------------


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


# -- the record ------------------------------------------------------------


def test_an_undeclared_resource_key_is_refused_before_it_is_written(db):
    new_queued_migration(db)
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
    # Only through ctx.resource(): a change to the view would be lost.
    with pytest.raises(TypeError):
        ctx.resources["server_id"] = "s-2"
    assert ctx.resources["server_id"] == "s-1"


def test_validate_claims_the_vm_when_the_request_could_not(db):
    # CloudStack did not answer at request time: the record is made, and
    # the flow's validate claims the VM (the unique index decides).
    new_migration(db, "holder", active_source="vm-1")
    new_migration(db, "late")
    ctx = claim(db, "c1", mid="late")
    with pytest.raises(exception.MigrationConflict, match="holder"):
        ctx.save(source_vm_id="vm-1", active_source="vm-1")


# -- the commit point ------------------------------------------------------


def test_the_commit_itself_refuses_a_cancelled_record(db):
    new_migration(db, state=states.CANCELLING)
    ctx = claim(db, "c1")
    ctx.migration["state"] = states.RUNNING  # read before the cancel
    with pytest.raises(exception.MigrationCancelled):
        ctx.commit()
    assert db.get_migration("m1")["committed"] is False
