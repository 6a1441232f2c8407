"""The live flow, whole: runner.run over every step (live_world.py).

The order of the calls that keep two copies of the guest from running
(HA off and recorded before the hop; B waiting, Nova ACTIVE, the commit,
then the stream), each step's rollback, the refusals and the fallback to
warm mode.  The agent's side (hop, move) is tests/functional's; the real
thing end to end is tests/e2e's.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import live
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import runner
from cs2os_agent.conductor.flow import warm
from tests.unit.conductor.flow.live_world import HOP
from tests.unit.conductor.flow.live_world import MOVED
from tests.unit.conductor.flow.live_world import World
from tests.unit.conductor.flow.live_world import refused

FORWARD = ["prepare.validate", "check_source", "image", "ports", "boot",
           "prepare_live_target", "swap_disk", "cs ha False", "live_hop",
           "begin_live_move", "nova reset active", "finish_live_move",
           "nova wait ACTIVE"]
# The rollback after a failure of the move before the commit.
UNDO_ALL = ["abort_live_move", "live_hop_back", "cs ha True", "nova stop",
            "restore_disk", "undo_boot", "undo_ports"]


def test_live_runs_its_own_steps():
    assert [n for n, _ in runner.flow({"mode": "live"})[0]] == list(
        states.LIVE_STEPS)
    assert runner.flow({"mode": "live"}) == (live.STEPS, live.ROLLBACK)
    assert "live" in states.MODES


def test_live_end_to_end(db, monkeypatch):
    w = World(db, monkeypatch)
    seen = {}
    # What the record says when each call is made.
    w.hooks["set_vm_ha"] = lambda: seen.setdefault(
        "ha", w.record()["resources"])
    w.hooks["begin_live_move"] = lambda: seen.setdefault(
        "begin", w.record()["committed"])
    w.hooks["finish_live_move"] = lambda: seen.setdefault(
        "finish", w.record()["committed"])
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.log == FORWARD + ["cs stop forced=True", "cleanup",
                               "cs unmanage"]
    # HA's old value was recorded before it was turned off.
    assert seen["ha"]["ha_enabled_before"] is True
    assert seen["ha"]["ha_disabled"] is True
    # Committed after B waits and Nova says ACTIVE, before the stream.
    assert seen == dict(seen, begin=False, finish=True)
    assert done["committed"] is True
    assert w.agent_args["live_hop"] == (
        "nova-1", "m1", "srv-1", {"host": "10.0.0.5", "domain": "i-2-7"})
    assert w.agent_args["prepare_live_target"] == (
        "nova-1", "m1", "srv-1", {"digest": "d"}, 64 << 20)
    assert w.agent_args["begin_live_move"] == (
        "nova-1", "m1", "srv-1", 60)
    assert w.agent_args["finish_live_move"] == ("nova-1", "m1")
    result = done["result"]
    assert result["live"] == dict(MOVED, hop=HOP)
    assert result["downtime_seconds"] == 0.012
    assert result["server_status"] == "ACTIVE"
    assert result["source_unmanaged"] is True
    messages = [e["message"] for e in done["events"]]
    assert any("QEMU paused it 12 ms" in m for m in messages)
    assert any("hopped from 10.0.0.5 to nova-1" in m for m in messages)


@pytest.mark.parametrize("failing, undone", [
    ("prepare_live_target", ["undo_boot", "undo_ports"]),
    ("swap_disk", ["nova stop", "restore_disk", "undo_boot", "undo_ports"]),
    ("live_hop", ["live_hop_back", "cs ha True", "nova stop",
                  "restore_disk", "undo_boot", "undo_ports"]),
    ("begin_live_move", UNDO_ALL),
])
def test_each_step_before_the_commit_rolls_back(db, monkeypatch, failing,
                                                undone):
    w = World(db, monkeypatch)
    w.fail(failing, refused("the agent said no"))
    done = w.run()
    assert done["state"] == "failed"
    assert "the agent said no" in done["error"]
    at = w.log.index(failing) + 1
    assert w.log[at:] == undone
    assert "nova reset active" not in w.log
    assert done["committed"] is False


def test_a_reset_state_failure_aborts_the_move(db, monkeypatch):
    w = World(db, monkeypatch)

    def nova_refuses(server_id, state):
        raise exception.OpenStackError(operation="reset", reason="409")

    w.clients.nova.reset_state = nova_refuses
    done = w.run()
    assert done["state"] == "failed" and not done["committed"]
    assert w.log[w.log.index("begin_live_move") + 1:] == UNDO_ALL


def test_b_failing_to_load_takes_the_commit_back_and_rolls_back(
        db, monkeypatch):
    w = World(db, monkeypatch)
    w.fail("finish_live_move", exception.LiveFailed(
        reason="Unknown savevm section"))
    done = w.run()
    assert done["state"] == "failed"
    assert done["committed"] is False
    assert "Unknown savevm section" in done["error"]
    # The temporary domain runs again (the agent's): back to CloudStack.
    assert w.log[w.log.index("finish_live_move") + 1:] == UNDO_ALL
    assert done["result"]["rolled_back"]


def test_an_unknown_outcome_stays_committed(db, monkeypatch):
    w = World(db, monkeypatch)
    w.fail("finish_live_move", exception.LiveIncomplete(
        reason="the guest may be in either domain"))
    done = w.run()
    assert done["state"] == "failed"
    assert done["committed"] is True
    assert "retry resumes at move" in done["error"]
    # Nothing undone: HA stays off, nothing hops back.
    assert w.log[-1] == "finish_live_move"
    # A retry resumes forward: finish again answers what happened.
    del w.clients.agent.fail["finish_live_move"]
    db.update_migration("m1", {"state": "running"})
    w.ctx.migration.update(state="running")
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.log.count("begin_live_move") == 1
    assert w.log.count("finish_live_move") == 2


def test_ha_that_was_off_stays_off_on_a_rollback(db, monkeypatch):
    w = World(db, monkeypatch)
    w.clients.cloudstack.vm["haenable"] = False
    w.fail("live_hop", refused())
    done = w.run()
    assert done["state"] == "failed"
    assert "cs ha True" not in w.log
    assert done["resources"]["ha_disabled"] is False


def test_cancel_before_the_move_rolls_back(db, monkeypatch):
    w = World(db, monkeypatch)
    w.hooks["live_hop"] = w.ctx.request_cancel
    done = w.run()
    assert done["state"] == "cancelled"
    assert "begin_live_move" not in w.log
    assert w.log[w.log.index("live_hop") + 1:] == [
        "live_hop_back", "cs ha True", "nova stop", "restore_disk",
        "undo_boot", "undo_ports"]


@pytest.mark.parametrize("change, words", [
    (dict(resources={"data_disks": [{"id": "d1"}]}),
     "has 1 data disk(s): data disks are not supported in live mode yet"),
    (dict(options={"cutover": "manual"}),
     "cutover manual is not supported in live mode yet"),
    (dict(source={"root_volume": {"storage": {"type": "RBD"}}}),
     "is on RBD primary storage: not supported in live mode"),
    (dict(resources={"layers": [{"path": "x"}]}),
     "has 1 layer(s) between it and its template"),
])
def test_live_refusals_name_the_reason(db, monkeypatch, change, words):
    w = World(db, monkeypatch, options=change.get("options"),
              resources=change.get("resources"))
    if "source" in change:
        source = dict(w.ctx.migration["source"], **change["source"])
        w.ctx.save(source=source)
    done = w.run()
    assert done["state"] == "failed"
    assert words in done["error"]
    assert "live_fallback" in done["error"]
    assert done["mode"] == "live"
    # Nothing else was done (the fake undo steps log even so).
    assert w.log == ["prepare.validate", "undo_boot", "undo_ports"]


def test_a_refusal_falls_back_to_warm_when_allowed(db, monkeypatch):
    w = World(db, monkeypatch, options={"live_fallback": True},
              resources={"data_disks": [{"id": "d1"}]})

    def warm_validate(ctx):
        w.log.append("warm validate as %s" % ctx.migration["mode"])

    monkeypatch.setattr(mirroring, "validate", warm_validate)

    def fake(name):
        return lambda ctx: w.log.append("warm " + name)

    monkeypatch.setattr(warm, "STEPS", [
        (n, f if n == "validate" else fake(n)) for n, f in warm.STEPS])
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert done["mode"] == "warm"
    # The warm flow's own steps after validate, none of live's.
    assert w.log == ["prepare.validate", "warm validate as warm"] + [
        "warm " + n for n in states.WARM_STEPS[1:]]
    fallback = done["result"]["live_fallback"]
    assert fallback["from"] == "live" and fallback["to"] == "warm"
    assert "data disks are not supported in live mode" in \
        fallback["reason"]
    warnings = [e["message"] for e in done["events"]
                if e["kind"] == "warning"]
    assert any("falling back to warm mode" in m for m in warnings)


def test_a_failure_after_the_fallback_rolls_back_as_warm(db, monkeypatch):
    w = World(db, monkeypatch, options={"live_fallback": True,
                                        "cutover": "manual"})
    undone = []
    monkeypatch.setattr(mirroring, "validate", lambda ctx: None)

    def broken(ctx):
        raise RuntimeError("no mirror")

    monkeypatch.setattr(warm, "STEPS", [
        (n, broken if n == "image" else f) for n, f in warm.STEPS])
    monkeypatch.setattr(warm, "ROLLBACK", [
        ("undo_warm", lambda ctx: undone.append("warm"))])
    done = w.run()
    assert done["state"] == "failed" and done["mode"] == "warm"
    assert undone == ["warm"]
    assert not any(x in w.log for x in ("undo_boot", "abort_live_move"))
