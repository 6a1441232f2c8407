"""The warm flow, whole, resumed: a conductor restart mid-flow, a retry.

A conductor that died mid-cutover finishes it only if that is provably
exact; one that died during the hold adopts a whole mirror or starts it
again; a retry past the cutover mirrors and cuts over afresh.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.conductor.flow import mirroring
from tests.unit.conductor.flow.scripted_sourceend import shutdown_time
from tests.unit.conductor.flow.warm_world import EXPORT
from tests.unit.conductor.flow.warm_world import MID
from tests.unit.conductor.flow.warm_world import PAUSED
from tests.unit.conductor.flow.warm_world import World


@pytest.mark.parametrize("reached_cloudstack", [True, False])
def test_conductor_restart_mid_shutdown_cutover_fails_safe(
        db, monkeypatch, reached_cloudstack):
    resources = {
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True, "cutover_started": 1000.0,
        "cutover_method": "shutdown", "source_stopped": True}
    if reached_cloudstack:
        resources["source_stop_job"] = "stop-job-1"
    w = World(db, monkeypatch, step="cutover", resources=resources)
    if reached_cloudstack:
        # The VM stopped while no conductor watched: its domain is gone.
        w.cloudstack.add_stop_job(["pending"])
        w.dom.gone = True
    else:
        # The stop never got to CloudStack: the mirror runs on.
        w.dom.job, w.dom.ready, w.dom.export = {"cur": 100, "end": 100}, \
            True, EXPORT
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert "the conductor stopped during a clean cutover" in done["error"]
    assert w.watches == []
    assert "cs stop forced=False" not in w.log
    undone = ["removed the mirror target on cmp-1", "deleted server srv-1"]
    if reached_cloudstack:
        assert done["result"]["rolled_back"] == undone + [
            "started CloudStack VM web-1 again"]
        assert w.log == ["nova delete", "cs wait stop-job-1", "cs start"]
    else:
        assert done["result"]["rolled_back"] == [
            "ended the block copy"] + undone
        assert w.log == ["nova delete"]
        assert w.dom.calls == ["blockJobAbort(0)"]
    assert w.cloudstack.state == "Running"
    assert not done["resources"].get("source_stop_job")


def test_a_retry_after_a_failure_past_the_cutover_cuts_over_afresh(
        db, monkeypatch):
    w = World(db, monkeypatch)
    w.agent.finish_error = mirror_errors.StorageDaemonDied(
        pid=11, status="killed by SIGKILL", during="closing", stderr="")
    failed = w.run()
    assert (failed["state"], failed["step"]) == ("failed", "finish")
    assert failed["result"]["rolled_back"] == [
        "removed the mirror target on cmp-1", "deleted server srv-1",
        "started CloudStack VM web-1 again"]
    assert failed["resources"]["cutover_done"] is True
    # The retry's mirror is a new one: its cutover is too.
    w.agent.finish_error = None
    done = w.rerun("mirror")
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["blockCopy", "blockCopy"]
    assert len(w.watches) == 2
    assert w.log == ["cs stop forced=False", "nova delete",
                     "cs wait stop-job-1", "cs start",
                     "cs stop forced=False", "nova start",
                     "cs wait stop-job-2", "cs unmanage"]
    assert done["resources"]["source_down_at"] == shutdown_time(
        w.watches[1])
    assert done["resources"]["cutover_started"] > shutdown_time(
        w.watches[0])
    assert w.agent_calls().count("finish_mirror") == 2


# A conductor died after it froze the source for a forced cutover.
FROZEN_MID_CUTOVER = {
    "mirror_prepared": True, "mirror_started": True, "mirror_ready": True,
    "cutover_started": 1000.0, "cutover_method": "force",
    "source_suspended": True}


def test_conductor_restart_mid_cutover_finishes_a_frozen_ready_job(
        db, monkeypatch):
    w = World(db, monkeypatch, method="force", step="cutover",
              resources=FROZEN_MID_CUTOVER)
    w.dom.job, w.dom.ready, w.dom.export = {"cur": 100, "end": 100}, True, \
        EXPORT
    w.dom.state_ = PAUSED
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["blockJobAbort(0)"]
    assert done["result"]["cutover"]["resumed"] is True
    assert done["resources"]["source_down_at"] == 1000.0


def test_conductor_restart_mid_cutover_with_the_job_gone_fails_safe(
        db, monkeypatch):
    w = World(db, monkeypatch, method="force", step="cutover",
              resources=FROZEN_MID_CUTOVER)
    w.dom.state_ = PAUSED
    done = w.run()
    assert (done["state"], done["step"]) == ("failed", "cutover")
    assert "cannot be proven complete" in done["error"]
    assert w.dom.calls == ["resume"]
    assert done["result"]["rolled_back"][0] == "resumed CloudStack VM web-1"


def test_conductor_restart_during_the_hold_adopts_a_whole_mirror(
        db, monkeypatch):
    w = World(db, monkeypatch, method="force", step="ready", resources={
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True})
    w.dom.job, w.dom.ready, w.dom.export = {"cur": 100, "end": 100}, True, \
        EXPORT
    done = w.run()
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["suspend", "blockJobAbort(0)"]
    assert "prepare_mirror" not in w.agent_calls()


def test_conductor_restart_during_the_hold_restarts_a_broken_mirror(
        db, monkeypatch):
    w = World(db, monkeypatch, method="force", step="ready", resources={
        "mirror_prepared": True, "mirror_started": True,
        "mirror_ready": True})
    done = w.run()  # no job any more: it starts again
    assert done["state"] == "succeeded", done["error"]
    assert w.dom.calls == ["blockCopy", "suspend", "blockJobAbort(0)"]
    assert w.agent_calls()[0] == "prepare_mirror"


def test_mirror_step_ends_an_earlier_attempts_job_first(db, monkeypatch):
    w = World(db, monkeypatch)
    w.dom.job, w.dom.export = {"cur": 10, "end": 100}, EXPORT
    assert w.run()["state"] == "succeeded"
    assert w.dom.calls[:2] == ["blockJobAbort(0)", "blockCopy"]


def test_agent_busy_with_our_own_prepare_is_waited_for(db, monkeypatch):
    w = World(db, monkeypatch)
    monkeypatch.setattr(mirroring, "BUSY_POLL", 0)
    real = w.agent.prepare_mirror
    tries = []

    def busy_once(*args):
        tries.append(1)
        if len(tries) == 1:
            raise exception.MigrationBusy(instance_uuid="srv-1", owner=MID,
                                          migration_id=MID)
        return real(*args)

    w.agent.prepare_mirror = busy_once
    assert w.run()["state"] == "succeeded"
    assert len(tries) == 2
